"""Video VAEs: `CausalVAE3D` (causal 3D, Wan 2.1 family) and `FrameVAE` (per frame, 2D).

Both map video `[B, C, F, H, W]` in [-1, 1] to a diagonal Gaussian over latents
`[B, z_dim, F_z, H/s, W/s]` and back, and share one API:

    posterior = vae.encode(x)                 # DiagonalGaussian: .mode(), .sample(generator), .kl()
    z = vae.normalize(posterior.mode())       # (z - latents_mean) / latents_std, per channel
    x_hat = vae.decode(vae.denormalize(z))    # clamped to [-1, 1] when config.clamp_output
    recon, posterior = vae(x)                 # training: whole clip, unclamped, sampled latent

`CausalVAE3D` compresses time by `temporal_factor` (1, 2 or 4) with a first-frame rule: a clip
of `1 + temporal_factor * k` frames gives `1 + k` latent frames, latent 0 coding frame 0 alone.
Its convolutions are causal, so latent j depends on frames <= temporal_factor * j only, and
`encode`/`decode` run chunk by chunk with per-layer frame caches (encode frame 0, then chunks of
4 frames; decode one latent frame at a time) so that memory does not grow with clip length.
With `VAEConfig.wan21()` it is Wan 2.1's VAE (load weights with `vidiff.compat.wan.vae`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vidiff.config import dataclass_from_dict
from vidiff.modelio import CONFIG_NAME, WEIGHTS_NAME, ModelLoadError, config_from_file, load_model_files, load_weights_strict, save_model
from vidiff.models.vae_blocks import Decoder, Encoder
from vidiff.nn.causal_conv import CAUSAL_PADDINGS, streaming


# --------------------------------------------------------------------------- frame counts


def valid_num_frames(num_frames: int, temporal_factor: int) -> tuple[int, ...]:
    """Frame counts of the form `1 + temporal_factor * k` nearest to `num_frames`:
    `(num_frames,)` if it is valid, else the valid counts just below (if >= 1) and just above."""
    if num_frames >= 1 and (num_frames - 1) % temporal_factor == 0:
        return (num_frames,)
    below = 1 + ((num_frames - 1) // temporal_factor) * temporal_factor if num_frames > 1 else None
    above = 1 + (max(num_frames - 1, 0) // temporal_factor + 1) * temporal_factor if num_frames >= 1 else 1
    return tuple(n for n in (below, above) if n is not None)


def check_num_frames(num_frames: int, temporal_factor: int) -> None:
    """Raise ValueError unless `num_frames == 1 + temporal_factor * k` (k >= 0)."""
    if num_frames >= 1 and (num_frames - 1) % temporal_factor == 0:
        return
    near = " or ".join(str(n) for n in valid_num_frames(num_frames, temporal_factor))
    raise ValueError(
        f"got {num_frames} frames; a VAE with temporal factor {temporal_factor} needs 1 + {temporal_factor}k "
        f"frames (nearest valid: {near})"
    )


# --------------------------------------------------------------------------- posterior


class DiagonalGaussian:
    """Diagonal Gaussian N(mean, exp(logvar)) from moments `[B, 2C, ...]` (first C = mean).

    logvar is clamped to [-30, 20] as in latent-diffusion VAEs, so `std` never under/overflows.
    """

    def __init__(self, moments: Tensor):
        if moments.shape[1] % 2:
            raise ValueError(f"moments need an even channel count (mean, logvar), got {tuple(moments.shape)}")
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def mode(self) -> Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """`mean + std * eps`, eps ~ N(0, I) drawn from `generator` (on the generator's device)."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)

    def kl(self) -> Tensor:
        """KL(N(mean, var) || N(0, I)) per sample, summed over all latent elements:

            KL = 1/2 * sum(mean^2 + var - 1 - logvar)        -> [B]
        """
        dims = tuple(range(1, self.mean.ndim))
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).sum(dim=dims)


class VAEOutput(NamedTuple):
    recon: Tensor
    posterior: DiagonalGaussian


# --------------------------------------------------------------------------- configs


def _check_stats(name: str, values: tuple[float, ...] | None, z_dim: int, positive: bool) -> tuple[float, ...] | None:
    if values is None:
        return None
    values = tuple(float(v) for v in values)
    if len(values) != z_dim:
        raise ValueError(f"{name} has {len(values)} values, expected z_dim={z_dim}")
    if positive and any(not v > 0 for v in values):
        raise ValueError(f"{name} must be positive, got {values}")
    return values


@dataclass
class VAEConfig:
    """Causal 3D VAE. Defaults are Wan 2.1's architecture (without its latent statistics).

    in_channels / out_channels: video channels (3 for RGB).
    base_dim: width of the first stage; stage widths are base_dim * dim_mult.
    decoder_base_dim: decoder width if different from base_dim.
    z_dim: latent channels.
    dim_mult: width multipliers, one stage each; spatial factor = 2 ** (len(dim_mult) - 1).
    num_res_blocks: residual blocks per encoder stage (decoder stages get one more).
    temporal_downsample: per downsampling stage (len(dim_mult) - 1 flags), whether it also halves
        time; temporal factor = 2 ** (number of True). The decoder mirrors it.
    mid_attention: per-frame attention in the middle blocks.
    dropout: in every residual block.
    causal_padding: "zeros" (Wan) or "replicate" first-frame treatment (see vidiff.nn.causal_conv).
    clamp_output: clamp `decode` output to [-1, 1] (`forward` is never clamped, for training).
    latents_mean / latents_std: per-channel latent statistics (None: 0 and 1).
    patch_size: spatial pixel-unshuffle before the encoder (and pixel-shuffle after the decoder),
        as Wan 2.2's VAE does: the convolutions then run at 1/p of the resolution, p^2 fewer
        positions, which is what makes a VAE trainable on a CPU; spatial factor gains a factor p.
    """

    in_channels: int = 3
    out_channels: int = 3
    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    mid_attention: bool = True
    dropout: float = 0.0
    causal_padding: str = "zeros"
    clamp_output: bool = True
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    patch_size: int = 1

    def __post_init__(self):
        self.dim_mult = tuple(int(m) for m in self.dim_mult)
        self.temporal_downsample = tuple(bool(t) for t in self.temporal_downsample)
        if int(self.patch_size) < 1:
            raise ValueError(f"VAEConfig.patch_size must be >= 1, got {self.patch_size}")
        for name in ("in_channels", "out_channels", "base_dim", "z_dim", "num_res_blocks"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"VAEConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.decoder_base_dim is not None and self.decoder_base_dim < 1:
            raise ValueError(f"VAEConfig.decoder_base_dim must be >= 1, got {self.decoder_base_dim}")
        if not self.dim_mult or any(m < 1 for m in self.dim_mult):
            raise ValueError(f"VAEConfig.dim_mult must be non-empty positive ints, got {self.dim_mult}")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"VAEConfig.temporal_downsample needs len(dim_mult) - 1 = {len(self.dim_mult) - 1} flags, "
                f"got {self.temporal_downsample}"
            )
        dec = self.decoder_base_dim or self.base_dim
        if len(self.dim_mult) > 1 and any((dec * m) % 2 for m in self.dim_mult):
            raise ValueError(f"decoder widths {dec} * {self.dim_mult} must be even (upsampling halves them)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VAEConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.causal_padding not in CAUSAL_PADDINGS:
            raise ValueError(f"VAEConfig.causal_padding must be one of {CAUSAL_PADDINGS}, got {self.causal_padding!r}")
        self.latents_mean = _check_stats("latents_mean", self.latents_mean, self.z_dim, positive=False)
        self.latents_std = _check_stats("latents_std", self.latents_std, self.z_dim, positive=True)

    @property
    def spatial_factor(self) -> int:
        return self.patch_size * 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VAEConfig:
        return dataclass_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def wan21(cls) -> VAEConfig:
        """Wan 2.1's VAE architecture (16 latents, 8x space, 4x time); the latent statistics
        come with the checkpoint (see vidiff.compat.wan.vae)."""
        return cls()

    @classmethod
    def world(cls, **overrides: Any) -> VAEConfig:
        """The compact VAE for the shapes world on CPU: 4x4 pixel-unshuffle, then widths 32/64
        with one spatial+temporal downsampling: 8x space, 2x time, 16 latent channels. A 17x64x64
        clip -> latents [16, 9, 8, 8] (23x fewer values); with a (1, 2, 2) DiT patch, 144 tokens.
        The convolutions run at 16x16 or less, which keeps a training step at batch 8 to a few
        seconds on 2 CPU cores. Replicate first-frame padding (no black past to unlearn)."""
        base = dict(base_dim=32, z_dim=16, dim_mult=(1, 2), num_res_blocks=1, patch_size=4,
                    temporal_downsample=(True,), mid_attention=True, causal_padding="replicate",
                    clamp_output=True)
        base.update(overrides)
        return cls(**base)


@dataclass
class FrameVAEConfig:
    """Per-frame 2D VAE, same blocks with temporal kernel 1 (no temporal mixing, factor 1).
    Fields as in VAEConfig; `frames_per_chunk` bounds how many frames are coded at once."""

    in_channels: int = 3
    out_channels: int = 3
    base_dim: int = 32
    z_dim: int = 8
    dim_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    mid_attention: bool = True
    dropout: float = 0.0
    clamp_output: bool = True
    frames_per_chunk: int = 8
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    def __post_init__(self):
        # reuse VAEConfig's checks for the shared fields
        shared = VAEConfig(
            in_channels=self.in_channels, out_channels=self.out_channels, base_dim=self.base_dim, z_dim=self.z_dim,
            dim_mult=self.dim_mult, num_res_blocks=self.num_res_blocks,
            temporal_downsample=(False,) * (len(tuple(self.dim_mult)) - 1), mid_attention=self.mid_attention,
            dropout=self.dropout, latents_mean=self.latents_mean, latents_std=self.latents_std,
        )
        self.dim_mult, self.latents_mean, self.latents_std = shared.dim_mult, shared.latents_mean, shared.latents_std
        if self.frames_per_chunk < 1:
            raise ValueError(f"FrameVAEConfig.frames_per_chunk must be >= 1, got {self.frames_per_chunk}")

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameVAEConfig:
        return dataclass_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return VAEConfig.to_dict(self)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- shared base


class _LatentAutoencoder(nn.Module):
    """Latent statistics, input checks, training forward and save/load shared by both VAEs."""

    config: VAEConfig | FrameVAEConfig
    encoder: Encoder
    decoder: Decoder

    def _init_stats(self, config) -> None:
        z = config.z_dim
        mean = torch.tensor(config.latents_mean) if config.latents_mean is not None else torch.zeros(z)
        std = torch.tensor(config.latents_std) if config.latents_std is not None else torch.ones(z)
        self.register_buffer("latents_mean", mean.float())
        self.register_buffer("latents_std", std.float())

    @property
    def spatial_factor(self) -> int:
        return self.config.spatial_factor

    @property
    def temporal_factor(self) -> int:
        return self.config.temporal_factor

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    def valid_num_frames(self, num_frames: int) -> tuple[int, ...]:
        """Nearest frame counts this VAE accepts (`(num_frames,)` if it is one)."""
        return valid_num_frames(num_frames, self.temporal_factor)

    def latent_num_frames(self, num_frames: int) -> int:
        check_num_frames(num_frames, self.temporal_factor)
        return 1 + (num_frames - 1) // self.temporal_factor

    def pixel_num_frames(self, latent_frames: int) -> int:
        return 1 + (latent_frames - 1) * self.temporal_factor

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """`(z_dim, F_z, H_z, W_z)` for a clip of this size (raises for invalid sizes)."""
        self._check_size(num_frames, height, width)
        s = self.spatial_factor
        return (self.z_dim, self.latent_num_frames(num_frames), height // s, width // s)

    def _check_size(self, num_frames: int, height: int, width: int) -> None:
        check_num_frames(num_frames, self.temporal_factor)
        s = self.spatial_factor
        if height % s or width % s:
            raise ValueError(f"height and width must be multiples of the spatial factor {s}, got {height}x{width}")

    def _check_video(self, x: Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected video [B, {self.config.in_channels}, F, H, W], got {tuple(x.shape)}")
        self._check_size(x.shape[2], x.shape[3], x.shape[4])

    def _check_latent(self, z: Tensor) -> None:
        if z.ndim != 5 or z.shape[1] != self.z_dim or z.shape[2] < 1:
            raise ValueError(f"expected latents [B, {self.z_dim}, F_z >= 1, H_z, W_z], got {tuple(z.shape)}")

    # latent statistics ------------------------------------------------------------------

    def _stat(self, t: Tensor, z: Tensor) -> Tensor:
        return t.to(device=z.device, dtype=z.dtype).view(1, -1, *([1] * (z.ndim - 2)))

    def normalize(self, z: Tensor) -> Tensor:
        """`(z - latents_mean) / latents_std` per channel (dim 1)."""
        return (z - self._stat(self.latents_mean, z)) / self._stat(self.latents_std, z)

    def denormalize(self, z: Tensor) -> Tensor:
        """Inverse of `normalize`: `z * latents_std + latents_mean`."""
        return z * self._stat(self.latents_std, z) + self._stat(self.latents_mean, z)

    def set_latent_stats(self, mean: Tensor, std: Tensor) -> None:
        """Set the per-channel statistics (also recorded in the config for saving)."""
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (self.z_dim,) or std.shape != (self.z_dim,) or not bool((std > 0).all()):
            raise ValueError(f"latent stats need shape ({self.z_dim},) and std > 0, got {mean.shape}, {std.shape}")
        self.latents_mean.copy_(mean)
        self.latents_std.copy_(std)
        self.config.latents_mean = tuple(mean.tolist())
        self.config.latents_std = tuple(std.tolist())

    # training ---------------------------------------------------------------------------

    def forward(self, x: Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None) -> VAEOutput:
        """Whole-clip encode + decode for training: `(recon, posterior)`; recon is NOT clamped
        (clamping would zero the gradient of overshooting pixels)."""
        self._check_video(x)
        posterior = DiagonalGaussian(self._encode_whole(x))
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return VAEOutput(self._decode_whole(z), posterior)

    def _finish(self, x: Tensor) -> Tensor:
        # x is the decoder's fresh output: clamp in place, no second video-sized copy
        return x.clamp_(-1.0, 1.0) if self.config.clamp_output else x

    # save / load ------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write `config.json` and `model.safetensors` into `directory` (each file atomically)."""
        save_model(directory, self, self.config.to_dict(), type(self).__name__)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu"):
        """Load a VAE written by `save_pretrained` (the class must match `_class_name`); a missing,
        truncated or foreign file raises ModelLoadError naming it."""
        name, data, state = load_model_files(directory)
        if name != cls.__name__:
            raise ModelLoadError(f"{os.path.join(directory, CONFIG_NAME)} describes a {name}, not a {cls.__name__}")
        config_cls = VAEConfig if cls is CausalVAE3D else FrameVAEConfig
        model = cls(config_from_file(config_cls.from_dict, data, os.path.join(directory, CONFIG_NAME)))
        load_weights_strict(model, state, os.path.join(os.fspath(directory), WEIGHTS_NAME))
        return model.to(map_location)


# --------------------------------------------------------------------------- causal 3D VAE


class CausalVAE3D(_LatentAutoencoder):
    """Causal 3D convolutional VAE (Wan 2.1 family); see the module docstring.

    Chunked calls keep their frame caches on the layers for the duration of the call, so one
    instance must not run two chunked calls at the same time (use one instance per thread).
    """

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config = config or VAEConfig()
        common = dict(z_dim=config.z_dim, dim_mult=config.dim_mult, num_res_blocks=config.num_res_blocks,
                      mid_attention=config.mid_attention, dropout=config.dropout, temporal_kernel=3,
                      causal_padding=config.causal_padding)
        pp = config.patch_size**2
        self.encoder = Encoder(in_channels=config.in_channels * pp, base_dim=config.base_dim,
                               temporal_downsample=config.temporal_downsample, **common)
        # per-frame 1x1x1 projections on the moments and on the latent (Wan's conv1 / conv2)
        self.quant_conv = nn.Conv3d(2 * config.z_dim, 2 * config.z_dim, 1)
        self.post_quant_conv = nn.Conv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder(out_channels=config.out_channels * pp, base_dim=config.decoder_base_dim or config.base_dim,
                               temporal_upsample=tuple(reversed(config.temporal_downsample)), **common)
        self._init_stats(config)

    def _patchify(self, x: Tensor) -> Tensor:
        """`[B, C, F, H, W] -> [B, C p^2, F, H/p, W/p]` (channel order c, row offset, column offset)."""
        p = self.config.patch_size
        if p == 1:
            return x
        b, c, f, h, w = x.shape
        x = x.reshape(b, c, f, h // p, p, w // p, p).permute(0, 1, 4, 6, 2, 3, 5)
        return x.reshape(b, c * p * p, f, h // p, w // p)

    def _unpatchify(self, y: Tensor) -> Tensor:
        """Inverse of `_patchify`."""
        p = self.config.patch_size
        if p == 1:
            return y
        b, cpp, f, h, w = y.shape
        y = y.reshape(b, cpp // (p * p), p, p, f, h, w).permute(0, 1, 4, 5, 2, 6, 3)
        return y.reshape(b, cpp // (p * p), f, h * p, w * p)

    def _encode_whole(self, x: Tensor) -> Tensor:
        return self.quant_conv(self.encoder(self._patchify(x)))

    def _decode_whole(self, z: Tensor) -> Tensor:
        return self._unpatchify(self.decoder(self.post_quant_conv(z)))

    def encode(self, x: Tensor, *, chunked: bool = True, frames_per_chunk: int | None = None) -> DiagonalGaussian:
        """Video `[B, C, 1 + f*k, H, W]` -> posterior over latents `[B, z_dim, 1 + k, H/s, W/s]`.

        chunked: encode frame 0 alone, then `frames_per_chunk` frames at a time (default 4, a
        multiple of the temporal factor f) with cached past frames; equals the whole-clip result.
        """
        self._check_video(x)
        if not chunked:
            return DiagonalGaussian(self._encode_whole(x))
        f = self.temporal_factor
        step = frames_per_chunk or f * max(1, 4 // f)
        if step % f:
            raise ValueError(f"frames_per_chunk must be a multiple of the temporal factor {f}, got {step}")
        parts = []
        x = self._patchify(x)
        with streaming(self.encoder):
            parts.append(self.encoder(x[:, :, :1]))
            for start in range(1, x.shape[2], step):
                parts.append(self.encoder(x[:, :, start : start + step]))
        return DiagonalGaussian(self.quant_conv(torch.cat(parts, dim=2)))

    def decode(self, z: Tensor, *, chunked: bool = True, latent_frames_per_chunk: int = 1) -> Tensor:
        """Latents `[B, z_dim, F_z, H_z, W_z]` (not normalised) -> video `[B, C, 1 + f (F_z - 1), H, W]`.

        chunked: decode `latent_frames_per_chunk` latent frames at a time with cached past
        frames, writing into a preallocated output; equals the whole-clip result.
        """
        self._check_latent(z)
        if not chunked:
            return self._finish(self._decode_whole(z))
        if latent_frames_per_chunk < 1:
            raise ValueError(f"latent_frames_per_chunk must be >= 1, got {latent_frames_per_chunk}")
        out = None
        pos = 0
        with streaming(self.decoder):
            for start in range(0, z.shape[2], latent_frames_per_chunk):
                y = self.decode_next(z[:, :, start : start + latent_frames_per_chunk])
                if out is None:
                    b, c, _, h, w = y.shape
                    out = y.new_empty(b, c, self.pixel_num_frames(z.shape[2]), h, w)
                out[:, :, pos : pos + y.shape[2]] = y
                pos += y.shape[2]
        return out

    def decode_next(self, z: Tensor) -> Tensor:
        """Decode the next latent frames of a sequence, continuing the decoder's frame caches.

        Call it inside `with vidiff.nn.causal_conv.streaming(vae.decoder):`; piece by piece it
        equals decoding the whole sequence at once (this is `decode`'s own loop body), which is
        how long videos are decoded window by window with flat memory."""
        return self._finish(self._unpatchify(self.decoder(self.post_quant_conv(z))))


# --------------------------------------------------------------------------- per-frame VAE


class FrameVAE(_LatentAutoencoder):
    """Per-frame 2D VAE: the same blocks with temporal kernel 1, frames folded into the batch.
    Latents `[B, z_dim, F, H/s, W/s]`; no temporal compression and no temporal mixing."""

    def __init__(self, config: FrameVAEConfig | None = None):
        super().__init__()
        self.config = config = config or FrameVAEConfig()
        common = dict(base_dim=config.base_dim, z_dim=config.z_dim, dim_mult=config.dim_mult,
                      num_res_blocks=config.num_res_blocks, mid_attention=config.mid_attention,
                      dropout=config.dropout, temporal_kernel=1, causal_padding="zeros")
        no_time = (False,) * (len(config.dim_mult) - 1)
        self.encoder = Encoder(in_channels=config.in_channels, temporal_downsample=no_time, **common)
        self.quant_conv = nn.Conv3d(2 * config.z_dim, 2 * config.z_dim, 1)
        self.post_quant_conv = nn.Conv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder(out_channels=config.out_channels, temporal_upsample=no_time, **common)
        self._init_stats(config)

    @staticmethod
    def _per_frame(fn, x: Tensor) -> Tensor:
        """Apply `fn` to `[B*F, C, 1, H, W]` and restore `[B, C', F, H', W']`."""
        b, c, f, h, w = x.shape
        y = fn(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, 1, h, w))
        return y.reshape(b, f, *y.shape[1:2], *y.shape[3:]).permute(0, 2, 1, 3, 4)

    def _encode_whole(self, x: Tensor) -> Tensor:
        return self._per_frame(lambda v: self.quant_conv(self.encoder(v)), x)

    def _decode_whole(self, z: Tensor) -> Tensor:
        return self._per_frame(lambda v: self.decoder(self.post_quant_conv(v)), z)

    def encode(self, x: Tensor, *, chunked: bool = True) -> DiagonalGaussian:
        """Video `[B, C, F, H, W]` -> posterior over `[B, z_dim, F, H/s, W/s]`, coding
        `config.frames_per_chunk` frames at a time when chunked (same result)."""
        self._check_video(x)
        n = self.config.frames_per_chunk if chunked else x.shape[2]
        parts = [self._encode_whole(x[:, :, s : s + n]) for s in range(0, x.shape[2], n)]
        return DiagonalGaussian(torch.cat(parts, dim=2))

    def decode(self, z: Tensor, *, chunked: bool = True) -> Tensor:
        """Latents `[B, z_dim, F, H_z, W_z]` -> video `[B, C, F, H, W]`."""
        self._check_latent(z)
        n = self.config.frames_per_chunk if chunked else z.shape[2]
        parts = [self._decode_whole(z[:, :, s : s + n]) for s in range(0, z.shape[2], n)]
        return self._finish(torch.cat(parts, dim=2))


# --------------------------------------------------------------------------- statistics


@torch.no_grad()
def estimate_latent_stats(
    vae: _LatentAutoencoder,
    clips: Iterable[Tensor],
    *,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of the (unnormalised) latents of `clips` (each `[B, C, F, H, W]`).

    Uses the posterior mode (or a sample when `sample`), accumulating sum and sum of squares in
    float64 over every batch, frame and position: std = sqrt(E[z^2] - E[z]^2). Apply the result
    with `vae.set_latent_stats(mean, std)`.
    """
    total = sq = None
    count = 0
    for clip in clips:
        post = vae.encode(clip)
        z = post.sample(generator) if sample else post.mode()
        z = z.transpose(0, 1).reshape(z.shape[1], -1).double()
        total = z.sum(1) if total is None else total + z.sum(1)
        sq = z.pow(2).sum(1) if sq is None else sq + z.pow(2).sum(1)
        count += z.shape[1]
    if count == 0:
        raise ValueError("estimate_latent_stats got no clips")
    mean = total / count
    std = (sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "CausalVAE3D", "VAEConfig", "FrameVAE", "FrameVAEConfig", "DiagonalGaussian", "VAEOutput",
    "valid_num_frames", "check_num_frames", "estimate_latent_stats", "count_parameters",
]

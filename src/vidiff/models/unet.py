"""UNet3D: a pseudo-3D video UNet (VDM / Make-A-Video / SVD family) and its per-frame baseline.

`UNet3D(config)(x_t, t, cond) -> prediction`, with `x_t` `[B, C, F, H, W]`, `t` in [0, 1] as `[B]`
or per frame `[B, F]`, and `cond` a `Conditioning`.

Structure. Frames are folded into the batch (`[B*F, C, H, W]`) and every level of the UNet is a
stack of *pseudo-3D layers*:

    2D residual block (GroupNorm, SiLU, 3x3 conv; the frame's time embedding added in between)
    -> temporal conv      (1D conv over frames at every pixel, residual, zero-initialised out)
    -> spatial transformer (self-attention over the frame's pixels, cross-attention to the text
                            with `cond.text_mask` as key padding mask, feed-forward)
    -> temporal attention (self-attention over frames at every pixel, with a temporal position
                            encoding, residual, zero-initialised output projection)

with a down path, a middle and an up path joined by skip connections. Because the time
embedding is computed per (sample, frame), per-frame timesteps `[B, F]` modulate each frame's
features with that frame's own noise level.

Temporal layers are zero-initialised and residual, so a freshly built UNet3D computes exactly its
per-frame image model (`per_frame_forward`, or a `temporal=False` UNet3D given the same spatial
weights). `freeze_spatial()` trains only the temporal layers (Make-A-Video / AnimateDiff recipe).
`UNetConfig(temporal=False)` is the naive per-frame generator: the same spatial network with no
layer that mixes frames, so changing frame k changes only frame k's output.

Temporal position encoding: `"sinusoidal"` (default; fixed, parameter-free, any number of frames)
or `"learned"` (a `[max_frames, C]` table per temporal attention, limited to `max_frames`). It is
added to the normalised tokens that feed the temporal attention's q/k/v, never to the residual
stream, so it does not break the zero-initialised identity.

Image conditioning follows VideoDiT's convention: `[x_t, frame_mask x mask_channels, image_latent]`
on the channel axis (Wan I2V's order); absent fields are zeros ("no frame given"). Models without
`image_conditioning` ignore `frame_mask` / `image_latent` (they condition through per-frame time).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vidiff.config import dataclass_from_dict
from vidiff.models.conditioning import Conditioning
from vidiff.nn.embeddings import ScalarEmbedding, timestep_sinusoid

_POSITION_KINDS = ("sinusoidal", "learned")


@dataclass
class UNetConfig:
    """Hyper-parameters of a UNet3D.

    in_channels:        channels of x_t (latent channels)
    out_channels:       channels of the prediction (None = in_channels)
    model_channels:     channels of the first level
    channel_mult:       per level, channels = model_channels * mult; level i runs at 1/2^i size
    num_res_blocks:     pseudo-3D layers per level on the down path (the up path has one more)
    attention_levels:   levels (indices into channel_mult) with spatial transformers; this is the
                        "attention resolutions" setting expressed as levels
    temporal_attention_levels: levels with temporal attention (None = attention_levels)
    mid_attention:      spatial (and temporal) attention in the middle block
    head_dim:           channels per attention head (each level's channels must be a multiple)
    norm_groups:        GroupNorm groups (must divide every level's channels)
    text_dim:           width of `cond.text` tokens; None = no cross-attention
    temporal:           False builds the per-frame baseline (no temporal layers at all)
    temporal_kernel:    kernel size of the temporal convs (odd)
    temporal_position:  "sinusoidal" or "learned" position encoding for temporal attention
    max_frames:         frames supported by the learned temporal position table
    image_conditioning: concatenate `[x, frame_mask (1 ch), image_latent]` on the channel axis
    image_channels:     channels of `cond.image_latent` (None = in_channels)
    mask_channels:      copies of `cond.frame_mask` in the input (Wan uses 4)
    extra_conditions:   names of scalar conditions in `cond.extras` (e.g. ("fps", "motion")),
                        embedded by `vidiff.nn.ScalarEmbedding` (raw values, zero-initialised) and
                        added to every frame's time embedding
    timestep_scale:     the time embedding sees sinusoid(timestep_scale * t)
    time_embed_dim:     width of the time embedding (None = 4 * model_channels)
    dropout:            dropout inside residual blocks
    gradient_checkpointing: recompute each layer in backward (training only)
    train_temporal_only: freeze every spatial weight at construction (see `freeze_spatial`)
    """

    in_channels: int = 4
    out_channels: int | None = None
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1, 2)
    temporal_attention_levels: tuple[int, ...] | None = None
    mid_attention: bool = True
    head_dim: int = 32
    norm_groups: int = 32
    text_dim: int | None = None
    temporal: bool = True
    temporal_kernel: int = 3
    temporal_position: str = "sinusoidal"
    max_frames: int = 64
    image_conditioning: bool = False
    image_channels: int | None = None
    mask_channels: int = 1
    extra_conditions: tuple[str, ...] = ()
    timestep_scale: float = 1000.0
    time_embed_dim: int | None = None
    dropout: float = 0.0
    gradient_checkpointing: bool = False
    train_temporal_only: bool = False

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so configs compare and hash the same way.
        for name in ("channel_mult", "attention_levels", "extra_conditions"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.temporal_attention_levels is not None:
            self.temporal_attention_levels = tuple(self.temporal_attention_levels)
        if self.out_channels is None:
            self.out_channels = self.in_channels
        if self.image_channels is None:
            self.image_channels = self.in_channels
        if self.time_embed_dim is None:
            self.time_embed_dim = 4 * self.model_channels

        for name in ("in_channels", "out_channels", "model_channels", "num_res_blocks", "head_dim",
                     "norm_groups", "temporal_kernel", "max_frames", "image_channels", "mask_channels",
                     "time_embed_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive int, got {value!r}")
        if self.text_dim is not None and (not isinstance(self.text_dim, int) or self.text_dim < 1):
            raise ValueError(f"UNetConfig.text_dim must be a positive int or None, got {self.text_dim!r}")
        if not self.channel_mult or any(not isinstance(m, int) or m < 1 for m in self.channel_mult):
            raise ValueError(f"UNetConfig.channel_mult must be positive ints, got {self.channel_mult!r}")
        levels = len(self.channel_mult)
        temporal_levels = self.temporal_attention_levels
        for name, lv in (("attention_levels", self.attention_levels),
                         ("temporal_attention_levels", temporal_levels or ())):
            bad = [i for i in lv if not isinstance(i, int) or not 0 <= i < levels]
            if bad:
                raise ValueError(f"UNetConfig.{name} has levels {bad} outside 0..{levels - 1} "
                                 f"(channel_mult has {levels} levels)")
        for mult in self.channel_mult:
            ch = self.model_channels * mult
            if ch % self.norm_groups:
                raise ValueError(f"UNetConfig: level channels {ch} not divisible by "
                                 f"norm_groups={self.norm_groups}")
            if ch % self.head_dim:
                raise ValueError(f"UNetConfig: level channels {ch} not divisible by "
                                 f"head_dim={self.head_dim}")
        if self.temporal_kernel % 2 == 0:
            raise ValueError(f"UNetConfig.temporal_kernel must be odd, got {self.temporal_kernel}")
        if self.temporal_position not in _POSITION_KINDS:
            raise ValueError(f"UNetConfig.temporal_position must be one of {_POSITION_KINDS}, "
                             f"got {self.temporal_position!r}")
        if not isinstance(self.timestep_scale, (int, float)) or not self.timestep_scale > 0:
            raise ValueError(f"UNetConfig.timestep_scale must be a positive number, got {self.timestep_scale!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if len(set(self.extra_conditions)) != len(self.extra_conditions):
            raise ValueError(f"UNetConfig.extra_conditions has duplicates: {self.extra_conditions!r}")
        if self.train_temporal_only and not self.temporal:
            raise ValueError("UNetConfig: train_temporal_only=True needs temporal=True "
                             "(a per-frame model has no temporal layers to train)")

    @property
    def temporal_levels(self) -> tuple[int, ...]:
        """Levels that get temporal attention."""
        if self.temporal_attention_levels is None:
            return self.attention_levels
        return self.temporal_attention_levels

    @classmethod
    def from_dict(cls, data: dict) -> "UNetConfig":
        """Build from a plain dict (e.g. config.json); unknown keys are rejected by name."""
        return dataclass_from_dict(cls, data)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists) that `from_dict` reads back."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out


# --------------------------------------------------------------------------------------------
# Small blocks


def _sinusoidal_positions(n: int, dim: int, device) -> Tensor:
    """[n, dim] table for frame positions 0..n-1: [cos(p w_i), sin(p w_i)], w_i = 10000^(-2i/dim)."""
    return timestep_sinusoid(torch.arange(n, device=device, dtype=torch.float32), dim)


def _zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _Attention(nn.Module):
    """Multi-head attention over tokens `[N, L, C]`, optional context and key padding mask.

    A sample whose key mask is all False gets a zero output (nothing to attend to, the same as no
    context at all), instead of the NaNs that softmax over an empty set would give.
    """

    def __init__(self, dim: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        context_dim = dim if context_dim is None else context_dim
        self.heads = dim // head_dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None, key_mask: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        n, lq, c = x.shape
        lk = context.shape[1]
        q = self.to_q(x).view(n, lq, self.heads, -1).transpose(1, 2)
        k = self.to_k(context).view(n, lk, self.heads, -1).transpose(1, 2)
        v = self.to_v(context).view(n, lk, self.heads, -1).transpose(1, 2)
        attn_mask = None
        has_any = None
        if key_mask is not None:
            has_any = key_mask.any(dim=1)
            safe = key_mask | ~has_any[:, None]
            attn_mask = safe[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.to_out(out.transpose(1, 2).reshape(n, lq, c))
        if has_any is not None and not bool(has_any.all()):
            out = out * has_any[:, None, None].to(out.dtype)
        return out


class _FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ResBlock2D(nn.Module):
    """Spatial residual block on `[N, C, H, W]` with a per-sample (here per-frame) time embedding.

    h = conv(SiLU(GN(x))); h = h + Linear(SiLU(emb)); h = conv(drop(SiLU(GN(h)))); out = skip(x) + h
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SpatialTransformer(nn.Module):
    """Per-frame transformer on `[N, C, H, W]`: self-attention over pixels, text cross-attention,
    feed-forward; residual around the whole block (GroupNorm -> 1x1 in ... 1x1 out)."""

    def __init__(self, ch: int, head_dim: int, groups: int, text_dim: int | None):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.proj_in = nn.Conv2d(ch, ch, 1)
        self.norm1 = nn.LayerNorm(ch)
        self.self_attn = _Attention(ch, head_dim)
        self.norm2 = nn.LayerNorm(ch) if text_dim is not None else None
        self.cross_attn = _Attention(ch, head_dim, context_dim=text_dim) if text_dim is not None else None
        self.norm3 = nn.LayerNorm(ch)
        self.ff = _FeedForward(ch)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor, text: Tensor | None, text_mask: Tensor | None) -> Tensor:
        n, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # [N, HW, C]
        tokens = tokens + self.self_attn(self.norm1(tokens))
        if self.cross_attn is not None and text is not None:
            tokens = tokens + self.cross_attn(self.norm2(tokens), text, text_mask)
        tokens = tokens + self.ff(self.norm3(tokens))
        return x + self.proj_out(tokens.transpose(1, 2).reshape(n, c, h, w))


class TemporalConv(nn.Module):
    """Residual 1D convolution over frames at every pixel (Make-A-Video pseudo-3D conv).

    x: [B*F, C, H, W]. out = x + conv_t(SiLU(GN(conv_t(SiLU(GN(x)))))), GroupNorm over (C, F, H, W)
    of each sample, zero padding in time; the last conv is zero-initialised so out = x at init.
    """

    def __init__(self, ch: int, groups: int, kernel: int):
        super().__init__()
        pad = (kernel // 2, 0, 0)
        self.norm1 = nn.GroupNorm(groups, ch)
        self.conv1 = nn.Conv3d(ch, ch, (kernel, 1, 1), padding=pad)
        self.norm2 = nn.GroupNorm(groups, ch)
        self.conv2 = _zero_(nn.Conv3d(ch, ch, (kernel, 1, 1), padding=pad))

    def forward(self, x: Tensor, frames: int) -> Tensor:
        bf, c, h, w = x.shape
        v = x.view(bf // frames, frames, c, h, w).transpose(1, 2)  # [B, C, F, H, W]
        v = self.conv1(F.silu(self.norm1(v)))
        v = self.conv2(F.silu(self.norm2(v)))
        return x + v.transpose(1, 2).reshape(bf, c, h, w)


class TemporalAttention(nn.Module):
    """Residual self-attention over frames at every pixel, with a temporal position encoding.

    x: [B*F, C, H, W] -> tokens [B*H*W, F, C]; out = x + Attn(LN(tokens) + pos); the attention's
    output projection is zero-initialised so out = x at init.
    """

    def __init__(self, ch: int, head_dim: int, position: str, max_frames: int):
        super().__init__()
        self.norm = nn.LayerNorm(ch)
        self.attn = _Attention(ch, head_dim)
        _zero_(self.attn.to_out)
        self.position = position
        self.max_frames = max_frames
        if position == "learned":
            self.pos_embed = nn.Parameter(torch.randn(max_frames, ch) * 0.02)
        else:
            self.pos_embed = None

    def forward(self, x: Tensor, frames: int) -> Tensor:
        bf, c, h, w = x.shape
        b = bf // frames
        tokens = x.view(b, frames, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, frames, c)
        normed = self.norm(tokens)
        if self.pos_embed is not None:
            if frames > self.max_frames:
                raise ValueError(f"TemporalAttention: {frames} frames exceed the learned position "
                                 f"table (max_frames={self.max_frames})")
            pos = self.pos_embed[:frames]
        else:
            pos = _sinusoidal_positions(frames, c, x.device)
        out = self.attn(normed + pos.to(normed.dtype)[None])
        out = out.view(b, h * w, frames, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)
        return x + out


class Pseudo3DLayer(nn.Module):
    """res block -> [temporal conv] -> [spatial transformer] -> [temporal attention]."""

    def __init__(self, cfg: UNetConfig, in_ch: int, out_ch: int, attention: bool, temporal_attention: bool):
        super().__init__()
        self.res = ResBlock2D(in_ch, out_ch, cfg.time_embed_dim, cfg.norm_groups, cfg.dropout)
        self.temporal_conv = TemporalConv(out_ch, cfg.norm_groups, cfg.temporal_kernel) if cfg.temporal else None
        self.attn = SpatialTransformer(out_ch, cfg.head_dim, cfg.norm_groups, cfg.text_dim) if attention else None
        self.temporal_attn = (TemporalAttention(out_ch, cfg.head_dim, cfg.temporal_position, cfg.max_frames)
                              if cfg.temporal and temporal_attention else None)

    def forward(self, x: Tensor, emb: Tensor, text: Tensor | None, text_mask: Tensor | None,
                frames: int, use_temporal: bool) -> Tensor:
        x = self.res(x, emb)
        if use_temporal and self.temporal_conv is not None:
            x = self.temporal_conv(x, frames)
        if self.attn is not None:
            x = self.attn(x, text, text_mask)
        if use_temporal and self.temporal_attn is not None:
            x = self.temporal_attn(x, frames)
        return x


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


_TEMPORAL_TYPES = (TemporalConv, TemporalAttention)


# --------------------------------------------------------------------------------------------
# The network


class UNet3D(nn.Module):
    """Pseudo-3D video UNet; `forward(x_t, t, cond) -> prediction` of shape `[B, out, F, H, W]`."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"UNet3D expects a UNetConfig, got {type(config).__name__}")
        self.config = cfg = config
        self.gradient_checkpointing = cfg.gradient_checkpointing
        ch0 = cfg.model_channels
        emb_dim = cfg.time_embed_dim

        self.time_embed = nn.Sequential(nn.Linear(ch0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.extra_embed = ScalarEmbedding(cfg.extra_conditions, ch0, emb_dim) if cfg.extra_conditions else None

        in_total = cfg.in_channels + (cfg.mask_channels + cfg.image_channels if cfg.image_conditioning else 0)
        self.conv_in = nn.Conv2d(in_total, ch0, 3, padding=1)

        levels = len(cfg.channel_mult)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_channels = [ch0]
        ch = ch0
        for level, mult in enumerate(cfg.channel_mult):
            out_ch = ch0 * mult
            layers = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                layers.append(Pseudo3DLayer(cfg, ch, out_ch, level in cfg.attention_levels,
                                            level in cfg.temporal_levels))
                ch = out_ch
                skip_channels.append(ch)
            self.down.append(layers)
            if level < levels - 1:
                self.downsample.append(Downsample(ch))
                skip_channels.append(ch)

        self.mid = nn.ModuleList([
            Pseudo3DLayer(cfg, ch, ch, cfg.mid_attention, cfg.mid_attention),
            Pseudo3DLayer(cfg, ch, ch, False, False),
        ])

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(levels)):
            out_ch = ch0 * cfg.channel_mult[level]
            layers = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(Pseudo3DLayer(cfg, ch + skip_channels.pop(), out_ch,
                                            level in cfg.attention_levels, level in cfg.temporal_levels))
                ch = out_ch
            self.up.append(layers)
            if level > 0:
                self.upsample.append(Upsample(ch))

        self.norm_out = nn.GroupNorm(cfg.norm_groups, ch)
        self.conv_out = nn.Conv2d(ch, cfg.out_channels, 3, padding=1)

        if cfg.train_temporal_only:
            self.freeze_spatial()

    # ---- parameter groups ------------------------------------------------------------------

    def _temporal_param_ids(self) -> set[int]:
        return {id(p) for m in self.modules() if isinstance(m, _TEMPORAL_TYPES) for p in m.parameters()}

    def temporal_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the temporal convs and temporal attentions (empty when temporal=False)."""
        ids = self._temporal_param_ids()
        return (p for p in self.parameters() if id(p) in ids)

    def spatial_parameters(self) -> Iterator[nn.Parameter]:
        """Every other parameter: the per-frame image model."""
        ids = self._temporal_param_ids()
        return (p for p in self.parameters() if id(p) not in ids)

    def spatial_state_dict(self) -> dict[str, Tensor]:
        """State dict of the per-frame image model; loads strictly into a `temporal=False` twin."""
        ids = self._temporal_param_ids()
        temporal_names = {n for n, p in self.named_parameters() if id(p) in ids}
        return {k: v for k, v in self.state_dict().items() if k not in temporal_names}

    def load_spatial_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Load a per-frame image model's weights, keeping the temporal layers as they are
        (inflating an image UNet into a video UNet). Every spatial key must be present."""
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        ids = self._temporal_param_ids()
        temporal_names = {n for n, p in self.named_parameters() if id(p) in ids}
        missing = [k for k in missing if k not in temporal_names]
        if missing or unexpected:
            raise ValueError(f"load_spatial_state_dict: missing spatial keys {missing[:5]}"
                             f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                             f"{'...' if len(unexpected) > 5 else ''}")

    def freeze_spatial(self) -> None:
        """Freeze every spatial weight and train only the temporal layers."""
        if not self.config.temporal:
            raise ValueError("freeze_spatial: this UNet3D has temporal=False, nothing would train")
        for p in self.spatial_parameters():
            p.requires_grad_(False)
        for p in self.temporal_parameters():
            p.requires_grad_(True)

    # ---- forward ---------------------------------------------------------------------------

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditioning | None = None) -> Tensor:
        """Predict from `x_t` `[B, C, F, H, W]` at times `t` (`[B]` or `[B, F]`, in [0, 1]).

        Reads `cond.text` / `cond.text_mask` (cross-attention; a row with no valid token means
        "no text"), `cond.frame_mask` / `cond.image_latent` (with `image_conditioning`) and
        `cond.extras` (the configured `extra_conditions`). `cond=None` is unconditional.
        """
        return self._forward(x_t, t, cond, use_temporal=True)

    def per_frame_forward(self, x_t: Tensor, t: Tensor, cond: Conditioning | None = None) -> Tensor:
        """The per-frame image model: the same network with every temporal layer skipped."""
        return self._forward(x_t, t, cond, use_temporal=False)

    def _check_inputs(self, x: Tensor, t: Tensor) -> Tensor:
        cfg = self.config
        if x.ndim != 5:
            raise ValueError(f"UNet3D: x_t must be [B, C, F, H, W], got shape {tuple(x.shape)}")
        b, c, f, h, w = x.shape
        if c != cfg.in_channels:
            raise ValueError(f"UNet3D: x_t has {c} channels, config.in_channels={cfg.in_channels}")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if h % factor or w % factor:
            raise ValueError(f"UNet3D: height/width {h}x{w} must be multiples of {factor} "
                             f"({len(cfg.channel_mult)} levels)")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape == (b,):
            t = t[:, None].expand(b, f)
        elif t.shape != (b, f):
            raise ValueError(f"UNet3D: t must be [B]=[{b}] or [B, F]=[{b}, {f}], got {tuple(t.shape)}")
        return t

    def _embed(self, t: Tensor, cond: Conditioning, b: int, f: int) -> Tensor:
        cfg = self.config
        emb = self.time_embed(timestep_sinusoid(cfg.timestep_scale * t.reshape(b * f), cfg.model_channels))
        if self.extra_embed is not None:
            emb = emb + self.extra_embed(cond.extras, b).repeat_interleave(f, dim=0)
        return emb

    def _image_channels(self, x: Tensor, cond: Conditioning) -> Tensor:
        """[x, frame_mask (mask_channels copies), image_latent] on channels; missing fields are
        zeros (no frame given)."""
        cfg = self.config
        b, _, f, h, w = x.shape
        mask = cond.frame_mask
        if mask is None:
            mask = x.new_zeros(b, f)
        if tuple(mask.shape) != (b, f):
            raise ValueError(f"UNet3D: cond.frame_mask must be [B, F]=[{b}, {f}], got {tuple(mask.shape)}")
        mask = mask.to(x.dtype)[:, None, :, None, None].expand(b, cfg.mask_channels, f, h, w)
        latent = cond.image_latent
        if latent is None:
            latent = x.new_zeros(b, cfg.image_channels, f, h, w)
        if tuple(latent.shape) != (b, cfg.image_channels, f, h, w):
            raise ValueError(f"UNet3D: cond.image_latent must be {(b, cfg.image_channels, f, h, w)}, "
                             f"got {tuple(latent.shape)}")
        return torch.cat([x, mask, latent.to(x.dtype)], dim=1)

    def _run(self, layer: Pseudo3DLayer, *args) -> Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def _forward(self, x: Tensor, t: Tensor, cond: Conditioning | None, use_temporal: bool) -> Tensor:
        cfg = self.config
        cond = Conditioning() if cond is None else cond
        t = self._check_inputs(x, t)
        b, _, f, h, w = x.shape
        use_temporal = use_temporal and cfg.temporal

        if cfg.image_conditioning:
            x = self._image_channels(x, cond)
        emb = self._embed(t, cond, b, f).to(x.dtype)

        text = text_mask = None
        if cfg.text_dim is None and cond.text is not None:
            raise ValueError("UNet3D: cond.text is set but this model has no text cross-attention "
                             "(config.text_dim=None)")
        if cfg.text_dim is not None and cond.text is not None:
            if cond.text.ndim != 3 or cond.text.shape[0] != b or cond.text.shape[2] != cfg.text_dim:
                raise ValueError(f"UNet3D: cond.text must be [B={b}, L, D={cfg.text_dim}], "
                                 f"got {tuple(cond.text.shape)}")
            text = cond.text.to(x.dtype).repeat_interleave(f, dim=0)
            if cond.text_mask is not None:
                if tuple(cond.text_mask.shape) != tuple(cond.text.shape[:2]):
                    raise ValueError(f"UNet3D: cond.text_mask must be {tuple(cond.text.shape[:2])}, "
                                     f"got {tuple(cond.text_mask.shape)}")
                text_mask = cond.text_mask.bool().repeat_interleave(f, dim=0)

        # Fold frames into the batch: [B, C, F, H, W] -> [B*F, C, H, W].
        hcur = x.transpose(1, 2).reshape(b * f, x.shape[1], h, w)
        hcur = self.conv_in(hcur)
        skips = [hcur]
        for level, layers in enumerate(self.down):
            for layer in layers:
                hcur = self._run(layer, hcur, emb, text, text_mask, f, use_temporal)
                skips.append(hcur)
            if level < len(self.downsample):
                hcur = self.downsample[level](hcur)
                skips.append(hcur)
        for layer in self.mid:
            hcur = self._run(layer, hcur, emb, text, text_mask, f, use_temporal)
        for i, layers in enumerate(self.up):
            for layer in layers:
                hcur = torch.cat([hcur, skips.pop()], dim=1)
                hcur = self._run(layer, hcur, emb, text, text_mask, f, use_temporal)
            if i < len(self.upsample):
                hcur = self.upsample[i](hcur)
        out = self.conv_out(F.silu(self.norm_out(hcur)))
        return out.view(b, f, cfg.out_channels, h, w).transpose(1, 2)

"""Wan 2.1 text-to-video and image-to-video as a `VideoPipeline`, numerically equal to diffusers'
`WanPipeline` / `WanImageToVideoPipeline` (same seed, same scheduler settings) without diffusers.

What Wan does differently from a vidiff pipeline, and therefore what this subclass overrides:
  * text: UMT5 tokens, 512 of them, padded embeddings zeroed, and no text mask in the network;
  * time: the UniPC grid `unipc_flow_times(n, flow_shift)`, but the network sees diffusers'
    integer timestep `floor(1000 t)` (FlowMatch Euler: `1000 t` unrounded);
  * guidance: two forward passes (conditional, then unconditional), `u + s (c - u)`;
  * image-to-video: no frame is held at t = 0. The network gets, as channels, a mask (1 on the
    first latent frame) and the normalised VAE latents (posterior mode) of the first frame
    followed by `num_frames - 1` black frames, plus CLIP tokens (`hidden_states[-2]` of the
    original image) through its added key/value projections; all frames share one t.
Latents are kept in fp32 whatever the transformer's dtype; the VAE decodes one latent frame at
a time.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import torch
from torch import Tensor

from vidiff import diffusion as D
from vidiff.compat.wan.memory import OFFLOAD_MODES, BlockOffload, cast_transformer, module_dtype, parse_dtype
from vidiff.models.conditioning import Conditioning
from vidiff.pipelines.pipeline import PipelineConfig, PipelineOutput, VideoPipeline
from vidiff.pipelines.scheduler import SchedulerConfig

# Sampling methods whose diffusers scheduler hands the network integer timesteps.
INTEGER_TIMESTEP_SAMPLERS = ("unipc", "dpmpp_2m")


def wan_timestep(t: Tensor, integer: bool) -> Tensor:
    """The t VideoDiT must see so that its `1000 * t` (float32) is exactly diffusers' timestep.

    integer: `k = floor(1000 t)` (UniPC's int64 timesteps), as the float32 v whose float32
    product `1000 * v` is closest to k: exactly k for 991 of 0..1000; for the other 10 (127,
    251, 253, 254, 502, 503, 506, 507, 508, 511) no float32 gives k and the time embedding's
    argument is off by <= 3.1e-5 (one float32 step at that size).
    Otherwise t is returned as float32 (FlowMatch Euler passes `1000 * sigma` in float32).
    """
    t32 = t.to(torch.float32)
    if not integer:
        return t32
    k = torch.floor(t.to(torch.float64) * 1000.0).to(torch.float32)
    v = (k.double() / 1000.0).to(torch.float32)
    for direction in (float("inf"), float("-inf")):
        step = torch.nextafter(v, torch.full_like(v, direction))
        v = torch.where((step * 1000.0 - k).abs() < (v * 1000.0 - k).abs(), step, v)
    return v


def wan_model_fn(transformer, integer_timesteps: bool):
    """`fn(x_t, t, cond) -> prediction` in fp32: x_t cast to the transformer's dtype, t mapped by
    `wan_timestep`."""
    dtype = module_dtype(transformer)

    def fn(x_t: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        return transformer(x_t.to(dtype), wan_timestep(t, integer_timesteps), cond).float()

    return fn


def two_pass_guidance(model_fn, cond: Conditioning, uncond: Conditioning, scale: float | Tensor):
    """Classifier-free guidance with two forward passes (Wan's order: conditional, then
    unconditional): `pred = u + scale (c - u)`; `scale` a float or per-latent-frame `[F]`."""

    def guided(x_t: Tensor, t: Tensor, _cond=None) -> Tensor:
        c = model_fn(x_t, t, cond)
        u = model_fn(x_t, t, uncond)
        s = scale
        if isinstance(s, Tensor) and s.ndim > 0:
            s = s.to(device=c.device, dtype=c.dtype)[None, None, :, None, None]
        return u + s * (c - u)

    return guided


class WanVideoPipeline(VideoPipeline):
    """A Wan 2.1 folder (diffusers or original layout) as a VideoPipeline; see the module doc.

    Extra component: `image_encoder` (`WanImageEncoder`, I2V only). Load with
    `vidiff.compat.wan.load_wan_pipeline(path)` or `VideoPipeline.from_pretrained(path)`.
    """

    def __init__(self, transformer, vae, text_encoder, scheduler: SchedulerConfig | None = None,
                 config: PipelineConfig | None = None, image_encoder=None):
        super().__init__(transformer, vae, text_encoder, scheduler, config)
        self.image_encoder = image_encoder
        self.text_length = 512  # Wan's fixed text context
        self.offload = "none"
        self._block_offload: BlockOffload | None = None

    # -- memory ---------------------------------------------------------------------------------

    def components(self) -> list[torch.nn.Module]:
        return [m for m in (self.text_encoder, self.image_encoder, self.transformer, self.vae)
                if isinstance(m, torch.nn.Module)]

    def to(self, device: str | torch.device) -> "WanVideoPipeline":
        self.disable_offload()
        self.device = torch.device(device)
        for m in self.components():
            m.to(self.device)
        return self

    def set_dtype(self, dtype: torch.dtype | str, vae_dtype: torch.dtype | str = torch.float32) -> "WanVideoPipeline":
        """Transformer weights in `dtype` (Wan's fp32 modules kept), text / image encoders in
        `dtype`, VAE in `vae_dtype` (fp32 by default, as Wan recommends). Latents stay fp32."""
        dtype = parse_dtype(dtype)
        cast_transformer(self.transformer, dtype)
        for enc in (self.text_encoder, self.image_encoder):
            if enc is not None:
                enc.to(dtype)
        self.vae.to(parse_dtype(vae_dtype))
        return self

    def enable_offload(self, mode: str, device: str | torch.device = "cuda") -> "WanVideoPipeline":
        """mode "none": everything on `device`; "model": each component on `device` only while it
        runs; "blocks": as "model", but the transformer streams its blocks one at a time and the
        text encoder runs on the CPU (the lowest GPU memory)."""
        if mode not in OFFLOAD_MODES:
            raise ValueError(f"unknown offload mode {mode!r}; expected one of {OFFLOAD_MODES}")
        self.to("cpu")
        self.device = torch.device(device)
        if mode == "none":
            return self.to(device)
        self.offload = mode
        return self

    def disable_offload(self) -> None:
        if self._block_offload is not None:
            self._block_offload.disable()
            self._block_offload = None
        self.offload = "none"

    @contextlib.contextmanager
    def _on_device(self, module):
        """Run `module` on the pipeline device; with offload, move it back to CPU afterwards."""
        if self.offload == "none" or module is None:
            yield
            return
        if module is self.text_encoder and self.offload == "blocks":
            yield  # UMT5 (5.7B for Wan) runs on the CPU, as Wan's --t5_cpu: short prompts, no GPU memory
            return
        if module is self.transformer and self.offload == "blocks":
            # kept between calls: the blocks' pinned host copies are made once
            if self._block_offload is None:
                self._block_offload = BlockOffload(module, self.device).enable()
            yield
            return
        module.to(self.device)
        try:
            yield
        finally:
            module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    # -- Wan-specific pieces --------------------------------------------------------------------

    def encode_prompts(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """UMT5 tokens zero-padded to `text_length` (512): Wan's network attends to the padding
        (as zeros) and I2V splits its context at 512. The encoder itself may stop at the longest
        prompt (`pad_to_max_length=False`): under the attention mask the real tokens' outputs do
        not depend on padding, and UMT5 over 512 positions costs far more time and memory."""
        with self._on_device(self.text_encoder), torch.no_grad():
            tokens, mask = self.text_encoder.encode(prompts)
        n = tokens.shape[1]
        if n < self.text_length:
            tokens = torch.nn.functional.pad(tokens * mask[..., None].to(tokens.dtype), (0, 0, 0, self.text_length - n))
            mask = torch.nn.functional.pad(mask, (0, self.text_length - n), value=False)
        return tokens.to(self.device), mask.to(self.device)

    def load_image(self, image) -> np.ndarray:
        """Path / PIL image / uint8 [H, W, 3] / float [3, H, W] in [-1, 1] -> uint8 [H, W, 3]."""
        from vidiff.video import image_to_array

        return image_to_array(image)

    def image_condition(self, image: np.ndarray, num_frames: int, height: int, width: int,
                        batch: int) -> tuple[Tensor, Tensor | None]:
        """(normalised latents of [image, black x (num_frames - 1)] `[B, C, F_z, H_z, W_z]`,
        CLIP tokens `[B, N, D]` or None)."""
        first = self.prepare_image(image, height, width)  # [1, 3, 1, H, W], resized with a notice
        video = torch.cat([first, first.new_zeros(1, 3, num_frames - 1, height, width)], dim=2)
        vae_dtype = next(self.vae.parameters()).dtype
        with self._on_device(self.vae), torch.no_grad():
            latent = self.vae.encode(video.to(self.device, vae_dtype)).mode()
        latent = self.vae.normalize(latent.float()).to(self.device)
        tokens = None
        if self.image_encoder is not None:
            with self._on_device(self.image_encoder):
                tokens = self.image_encoder.encode([image]).to(self.device)
            tokens = tokens.expand(batch, -1, -1)
        return latent.expand(batch, -1, -1, -1, -1), tokens

    def decode_latents(self, latents: Tensor) -> Tensor:
        vae_dtype = next(self.vae.parameters()).dtype
        with self._on_device(self.vae), torch.no_grad():
            z = self.vae.denormalize(latents.to(self.device, vae_dtype))
            return self.vae.decode(z).float().clamp_(-1, 1)  # in place: no second video-sized copy

    # -- generation -----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        *,
        negative_prompt: str = "",
        image=None,
        video=None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | tuple[float, float] | Tensor | None = None,
        sampler: str | None = None,
        noise_prior: str = "independent",
        noise_strength: float = 0.5,
        seed: int = 0,
        generator: torch.Generator | None = None,
        return_latents: bool = False,
        output_type: str = "uint8",
        progress: bool = True,
        callback=None,
    ) -> PipelineOutput:
        """Generate a video with Wan 2.1 (arguments as `VideoPipeline.__call__`).

        image: the first frame for an I2V model (required there, refused by a T2V model).
        output_type: "uint8" (frames `[F, H, W, 3]`) or "float" (float32 in [0, 1], diffusers'
            `output_type="np"`) or "latent" (no decoding; `frames` is None, latents returned).
        """
        t0 = time.perf_counter()
        if video is not None:
            raise ValueError("Wan 2.1 pipelines do not continue videos (video=...); give image= for I2V")
        if output_type not in ("uint8", "float", "latent"):
            raise ValueError(f"output_type must be 'uint8', 'float' or 'latent', got {output_type!r}")
        i2v = self.config.image_conditioning == "concat"
        if i2v and image is None:
            raise ValueError("this Wan model is image-to-video: pass image= (the first frame)")
        if not i2v and image is not None:
            raise ValueError("this Wan model is text-to-video; it cannot take image=")
        req = self.resolve_request(prompt, num_frames=num_frames, height=height, width=width,
                                   num_inference_steps=num_inference_steps, sampler=sampler,
                                   guidance_scale=guidance_scale, seed=seed, generator=generator)
        prompts, batch, height, width, num_frames = req.prompts, len(req.prompts), req.height, req.width, req.num_frames
        sch, steps, sampler, scale, generator = self.scheduler, req.steps, req.sampler, req.guidance_scale, req.generator
        if sampler not in ("unipc", "euler", "heun", "dpmpp_2m"):
            raise ValueError(f"sampler {sampler!r} does not apply to Wan's flow-matching model "
                             "(use unipc, euler, heun or dpmpp_2m)")

        multiple = self.vae.spatial_factor * self.transformer.config.patch_size[1]
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple} for this Wan model, got "
                             f"{height}x{width} (e.g. {height // multiple * multiple}x{width // multiple * multiple})")
        c, fz, hz, wz = self.vae.latent_shape(num_frames, height, width)
        tokens, _ = self.encode_prompts(prompts)
        cond = Conditioning(text=tokens)  # Wan's network applies no text mask (padding is zeros)
        if i2v:
            arr = self.load_image(image)
            latent, image_tokens = self.image_condition(arr, num_frames, height, width, batch)
            frame_mask = torch.zeros(batch, fz, device=self.device)
            frame_mask[:, 0] = 1
            cond.image_latent, cond.frame_mask, cond.image_tokens = latent, frame_mask, image_tokens

        model_fn = wan_model_fn(self.transformer, sampler in INTEGER_TIMESTEP_SAMPLERS)
        if isinstance(scale, tuple):
            scale = D.guidance_ramp(scale[0], scale[1], fz)
        guided = model_fn
        if not (isinstance(scale, (int, float)) and float(scale) <= 1.0):
            u_tokens, _ = self.encode_prompts([negative_prompt] * batch)
            uncond = Conditioning(text=u_tokens, image_latent=cond.image_latent, frame_mask=cond.frame_mask,
                                  image_tokens=cond.image_tokens)
            guided = two_pass_guidance(model_fn, cond, uncond, scale)
        denoise = D.x0_denoiser(guided, sch.make_schedule(), sch.prediction_type, cond)

        x = self.initial_noise((batch, c, fz, hz, wz), noise_prior, noise_strength, generator).to(self.device)
        times = sch.times(sampler, steps).to(self.device)
        with self._on_device(self.transformer):
            latents = sch.sample(denoise, x, times, sampler, generator=generator, progress=progress,
                                 callback=callback)
        if output_type == "latent":
            return PipelineOutput(frames=None, latents=latents, seconds=time.perf_counter() - t0)
        frames = self.decode_latents(latents)  # a fresh tensor: converted in place
        if output_type == "float":
            out = frames.mul_(0.5).add_(0.5).clamp_(0, 1).permute(0, 2, 3, 4, 1).cpu().numpy()
        else:
            out = frames.add_(1).mul_(127.5).round_().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
        return PipelineOutput(frames=out[0] if req.single else out, latents=latents if return_latents else None,
                              seconds=time.perf_counter() - t0)

    # -- saving ---------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the pipeline in Wan's diffusers layout (see `vidiff.compat.wan.export`)."""
        from vidiff.compat.wan.export import save_wan_pipeline

        save_wan_pipeline(self, directory)



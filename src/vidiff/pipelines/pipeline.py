"""VideoPipeline: prompt (+ optional first frame or leading frames) -> video.

Text-to-video, image-to-video and continuation are one mechanism: the latent frames that are
given (the encoded first frame, or the encoded leading frames) are held at `t = 0` through every
sampling step by per-frame time grids `[N+1, B, F]`, so the samplers leave them bit-identical and
the network sees them clean. Models configured with `image_condition="concat"` additionally
receive the frame mask and the conditioning latents as input channels.

The given frames may sit at ANY latent indices (`denoise_latents(..., given, given_index)`): the
first and last frame for keyframe interpolation, the overlap with the previous window for long
videos (`vidiff.pipelines.long`).

Folder layout (`save_pretrained` / `from_pretrained`)::

    model_index.json          {"_class_name": "VideoPipeline", defaults (frames, size, fps), ...}
    transformer/              config.json (+ _class_name VideoDiT | UNet3D) + model.safetensors
    vae/                      config.json (+ _class_name CausalVAE3D | FrameVAE) + model.safetensors
    text_encoder/             built-in encoder folder, or a Hugging Face text encoder
    scheduler/config.json     SchedulerConfig
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from vidiff import diffusion as D
from vidiff.config import dataclass_from_dict
from vidiff.models.conditioning import Conditioning
from vidiff.modelio import CONFIG_NAME, ModelLoadError, atomic_directory, config_from_file, load_model_files, load_weights_strict, read_json, save_model, write_json
from vidiff.pipelines.scheduler import SchedulerConfig
from vidiff.video import fit_image, frames_to_tensor, image_to_array, tensor_to_frames

NOISE_PRIORS = ("independent", "mixed", "progressive")
IMAGE_CONDITIONINGS = ("clean_frames", "concat", "none")


@dataclass
class PipelineConfig:
    """Defaults of a pipeline (`model_index.json`).

    image_conditioning: how given frames reach the model — "clean_frames" (held at t=0 via
        per-frame time; the model may also take them as channels if its config says "concat"),
        "concat" (channels only, all frames share t, Wan I2V), "none" (text-to-video only).
    """

    num_frames: int = 17
    height: int = 64
    width: int = 64
    fps: float = 8.0
    image_conditioning: str = "clean_frames"
    extras: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.image_conditioning not in IMAGE_CONDITIONINGS:
            raise ValueError(f"unknown image_conditioning {self.image_conditioning!r}; expected one of {IMAGE_CONDITIONINGS}")

    @classmethod
    def from_dict(cls, data: dict) -> "PipelineConfig":
        """From `model_index.json`: `_class_name` and the shared-VAE entry `vae` are read by the
        folder loader; any other unknown key raises ValueError naming it (a typo such as
        `num_frame` must not silently fall back to a default)."""
        return dataclass_from_dict(cls, data, ignore=("_class_name", "vae"))


@dataclass
class PipelineOutput:
    """`frames`: uint8 `[F, H, W, 3]` for one prompt, `[B, F, H, W, 3]` for a list;
    `latents`: the final latents `[B, C, F, H, W]` when asked for; `seconds`: wall time."""

    frames: np.ndarray
    latents: Tensor | None = None
    seconds: float = 0.0


@dataclass
class Request:
    """One generation call with every default resolved (`VideoPipeline.resolve_request`)."""

    prompts: list[str]
    single: bool  # a single caption (not a list): return one video, not a batch
    num_frames: int
    height: int
    width: int
    steps: int
    sampler: str
    guidance_scale: object  # a number, a (min, max) ramp or a per-latent-frame tensor
    generator: torch.Generator


def _model_classes():
    from vidiff.models.dit import DiTConfig, VideoDiT
    from vidiff.models.unet import UNet3D, UNetConfig
    from vidiff.models.vae import CausalVAE3D, FrameVAE

    return {"VideoDiT": (VideoDiT, DiTConfig), "UNet3D": (UNet3D, UNetConfig)}, {"CausalVAE3D": CausalVAE3D, "FrameVAE": FrameVAE}


def load_denoiser(directory: str) -> torch.nn.Module:
    """Load a `transformer/` folder (VideoDiT or UNet3D) written by `save_model`."""
    transformers, _ = _model_classes()
    name, config, state = load_model_files(directory)
    if name not in transformers:
        raise ModelLoadError(f"{directory}/config.json: unknown denoiser class {name!r}; expected one of {sorted(transformers)}")
    cls, cfg_cls = transformers[name]
    model = cls(config_from_file(cfg_cls.from_dict, config, os.path.join(directory, CONFIG_NAME)))
    load_weights_strict(model, state, os.path.join(directory, "model.safetensors"))
    return model.eval()


def load_vae(directory: str) -> torch.nn.Module:
    """Load a `vae/` folder (CausalVAE3D or FrameVAE)."""
    _, vaes = _model_classes()
    name = read_json(os.path.join(directory, "config.json")).get("_class_name")
    if name not in vaes:
        raise ModelLoadError(f"{directory}/config.json: unknown VAE class {name!r}; expected one of {sorted(vaes)}")
    return vaes[name].from_pretrained(directory).eval()


def vae_directory(directory: str, index: dict) -> str:
    """The pipeline's VAE folder: `<directory>/vae`, or the folder that `model_index.json`'s
    "vae" entry names relative to `directory` (pipelines trained on the same latents share one
    VAE, e.g. the shipped per-frame baseline uses `../world-dit/vae`)."""
    shared = index.get("vae")
    if shared is None:
        return os.path.join(directory, "vae")
    if not isinstance(shared, str) or os.path.isabs(shared):
        raise ModelLoadError(f"{directory}/model_index.json: 'vae' must be a relative folder path, got {shared!r}")
    path = os.path.normpath(os.path.join(directory, shared))
    if not os.path.isdir(path):
        raise ModelLoadError(f"{directory}/model_index.json: shared VAE folder {path} not found")
    return path


class VideoPipeline:
    """Text/image-conditioned video generation with a latent denoiser, a VAE and a text encoder.

    Example::

        pipe = VideoPipeline.from_pretrained("path/to/model")
        out = pipe("a large red circle moves right on a black background", seed=0)
        out.frames.shape  # (17, 64, 64, 3) uint8
    """

    def __init__(self, transformer, vae, text_encoder, scheduler: SchedulerConfig | None = None,
                 config: PipelineConfig | None = None):
        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.scheduler = scheduler or SchedulerConfig()
        self.config = config or PipelineConfig()
        self.device = torch.device("cpu")

    # -- loading and saving ---------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "VideoPipeline":
        """Load a pipeline folder (vidiff layout, or a diffusers Wan 2.1 folder)."""
        from vidiff.models.text import load_text_encoder

        from vidiff.compat.wan import is_wan_directory, load_wan_pipeline

        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise ModelLoadError(f"{directory}: model directory not found")
        if is_wan_directory(directory):  # diffusers layout or the original release layout
            return load_wan_pipeline(directory, device=device)
        index_path = os.path.join(directory, "model_index.json")
        index = read_json(index_path)
        if index.get("_class_name") != "VideoPipeline":
            raise ModelLoadError(f"{index_path}: not a vidiff pipeline (class {index.get('_class_name')!r})")
        scheduler_path = os.path.join(directory, "scheduler", CONFIG_NAME)
        pipe = cls(
            transformer=load_denoiser(os.path.join(directory, "transformer")),
            vae=load_vae(vae_directory(directory, index)),
            text_encoder=load_text_encoder(os.path.join(directory, "text_encoder")),
            scheduler=config_from_file(SchedulerConfig.from_dict, read_json(scheduler_path), scheduler_path),
            config=config_from_file(PipelineConfig.from_dict, index, index_path),
        )
        return pipe.to(device)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the pipeline folder atomically (a crash leaves the old folder or the new one)."""
        with atomic_directory(directory) as tmp:
            save_model(os.path.join(tmp, "transformer"), self.transformer, self.transformer.config.to_dict(),
                       type(self.transformer).__name__)
            self.vae.save_pretrained(os.path.join(tmp, "vae"))
            self.text_encoder.save_pretrained(os.path.join(tmp, "text_encoder"))
            os.makedirs(os.path.join(tmp, "scheduler"))
            write_json(os.path.join(tmp, "scheduler", "config.json"), self.scheduler.to_dict())
            write_json(os.path.join(tmp, "model_index.json"), {"_class_name": "VideoPipeline", **asdict(self.config)})

    def to(self, device: str | torch.device) -> "VideoPipeline":
        self.device = torch.device(device)
        for m in (self.transformer, self.vae, self.text_encoder):
            if isinstance(m, torch.nn.Module):
                m.to(self.device)
        return self

    # -- helpers --------------------------------------------------------------------------------

    def valid_num_frames(self, num_frames: int) -> int:
        """The nearest frame count the VAE can produce (1 + k * temporal factor), with a notice."""
        r = self.vae.temporal_factor
        if r == 1 or (num_frames - 1) % r == 0:
            return num_frames
        k = max(0, round((num_frames - 1) / r))
        valid = 1 + k * r
        warnings.warn(f"num_frames={num_frames} is not of the form 1 + {r}k that the VAE produces; using {valid}",
                      stacklevel=3)
        return valid

    def warn_unknown_words(self, prompts: list[str]) -> list[str]:
        """Warn (and return) the words of the prompts that the text encoder has no token for."""
        unknown_fn = getattr(self.text_encoder, "unknown_words", None)
        if unknown_fn is None:
            return []
        unknown = sorted({w for p in prompts for w in unknown_fn(p)})
        if unknown:
            warnings.warn(f"the model does not know the word(s) {unknown}; generating anyway", stacklevel=3)
        return unknown

    def encode_prompts(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            tokens, mask = self.text_encoder.encode(prompts)
        return tokens.to(self.device), mask.to(self.device)

    def prepare_image(self, image, height: int, width: int) -> Tensor:
        """Path / PIL image / uint8 [H,W,3] / float [3,H,W] in [-1,1] -> [1, 3, 1, H, W] in [-1, 1].

        An image of another size is resized with the aspect ratio kept and center-cropped, with a notice."""
        arr = image_to_array(image.cpu() if isinstance(image, Tensor) else image)
        source = os.fspath(image) if isinstance(image, (str, os.PathLike)) else "the image"
        if arr.shape[:2] != (height, width):
            warnings.warn(f"{source} is {arr.shape[1]}x{arr.shape[0]}; resized (aspect kept, center crop) to {width}x{height}",
                          stacklevel=3)
            arr = fit_image(arr, (height, width))
        return frames_to_tensor(arr[None])[None].to(self.device)

    def encode_frames(self, video: Tensor) -> Tensor:
        """Pixels `[B, 3, F, H, W]` -> normalised latents (posterior mode)."""
        with torch.no_grad():
            return self.vae.normalize(self.vae.encode(video).mode())

    def decode_latents(self, latents: Tensor) -> Tensor:
        """Normalised latents -> pixels `[B, 3, F, H, W]` in [-1, 1], decoded in chunks."""
        with torch.no_grad():
            return self.vae.decode(self.vae.denormalize(latents)).clamp_(-1, 1)  # fresh output: in place

    def initial_noise(self, shape, prior: str, strength: float, generator: torch.Generator) -> Tensor:
        if prior == "independent":
            return D.independent_noise(shape, generator=generator)
        if prior == "mixed":
            return D.mixed_noise(shape, strength, generator=generator)
        if prior == "progressive":
            return D.progressive_noise(shape, strength, generator=generator)
        raise ValueError(f"unknown noise prior {prior!r}; expected one of {NOISE_PRIORS}")

    @staticmethod
    def given_indices(given_index: int | Sequence[int], frames: int) -> list[int]:
        """`n` (the leading n frames) or explicit latent indices -> a checked, sorted index list."""
        idx = list(range(given_index)) if isinstance(given_index, int) else [int(i) for i in given_index]
        if len(set(idx)) != len(idx) or any(not 0 <= i < frames for i in idx):
            raise ValueError(f"given latent indices {idx} must be distinct and within [0, {frames})")
        return idx

    def build_condition(self, tokens: Tensor, mask: Tensor, given: Tensor | None, given_index: int | Sequence[int],
                        batch: int, latent_shape: tuple[int, ...]) -> Conditioning:
        """The Conditioning for one branch: text plus, when frames are given, mask and latents.

        given: latents `[B or 1, C, K, H, W]` of the K given frames; given_index: their latent
        indices (K of them), or an int n meaning the leading n frames."""
        cond = Conditioning(text=tokens, text_mask=mask)
        if self.config.extras:
            cond.extras = {k: torch.full((batch,), float(v), device=self.device) for k, v in self.config.extras.items()}
        if given is not None and getattr(getattr(self.transformer, "config", None), "image_condition", "none") == "concat":
            idx = self.given_indices(given_index, latent_shape[1])
            frame_mask = torch.zeros(batch, latent_shape[1], device=self.device)
            frame_mask[:, idx] = 1
            image_latent = torch.zeros(batch, *latent_shape, device=self.device)
            image_latent[:, :, idx] = given.to(image_latent.dtype)
            cond.frame_mask, cond.image_latent = frame_mask, image_latent
        return cond

    def held_times(self, times: Tensor, batch: int, frames: int, given_index: int | Sequence[int],
                   level: float = 0.0) -> Tensor:
        """A time grid `[N+1]` -> per-frame `[N+1, B, F]` with the given frames at t = `level`
        (0: clean) throughout."""
        held = torch.zeros(batch, frames, dtype=torch.bool, device=times.device)
        held[:, self.given_indices(given_index, frames)] = True
        return torch.where(held, torch.full((), level, dtype=times.dtype, device=times.device),
                           times[:, None, None].expand(-1, batch, frames))

    def make_denoiser(self, text: tuple[Tensor, Tensor], latent_shape: tuple[int, ...], *,
                      uncond_text: tuple[Tensor, Tensor] | None = None, guidance_scale=1.0,
                      given: Tensor | None = None, given_index: int | Sequence[int] = 0,
                      history_guidance: float = 1.0, generator: torch.Generator | None = None):
        """`denoise(x_t, t) -> x0_hat` for latents of `latent_shape` `(C, F, H, W)`: text (and
        given frames) conditioning, classifier-free guidance when `uncond_text` is given and the
        scale is not 1. `guidance_scale`: a number, a (min, max) per-frame ramp or an `[F]` tensor.
        `history_guidance` h != 1 with given frames adds history guidance
        (`vidiff.diffusion.history_guided_denoiser`; its noise for the given frames comes from
        `generator`)."""
        tokens, mask = text
        batch, fz = tokens.shape[0], latent_shape[1]
        sch = self.scheduler
        cond = self.build_condition(tokens, mask, given, given_index, batch, latent_shape)
        scale = guidance_scale
        if isinstance(scale, tuple):
            scale = D.guidance_ramp(scale[0], scale[1], fz)
        uncond = None
        if uncond_text is not None and not (isinstance(scale, (int, float)) and float(scale) == 1.0):
            uncond = self.build_condition(*uncond_text, given, given_index, batch, latent_shape)
        schedule = sch.make_schedule()
        if given is not None and float(history_guidance) != 1.0:
            free = cond if cond.frame_mask is None else replace(
                cond, frame_mask=torch.zeros_like(cond.frame_mask), image_latent=torch.zeros_like(cond.image_latent))
            noise = D.independent_noise((batch, *latent_shape), generator=generator).to(self.device)
            free_input = self._history_free_input(self.given_indices(given_index, fz), noise, schedule)
            model_fn = D.history_guided_denoiser(self.transformer, cond, uncond, free, scale, float(history_guidance),
                                                 free_input)
        elif uncond is not None:
            model_fn = D.guided_denoiser(self.transformer, cond, uncond, scale)
        else:
            model_fn = self.transformer
        return D.x0_denoiser(model_fn, schedule, sch.prediction_type, cond)

    @staticmethod
    def _history_free_input(idx: list[int], noise: Tensor, schedule):
        """The history-free branch's input: given frames (held at t = 0) noised to the generated
        frames' level, `alpha(t) x_given + sigma(t) noise`, at that t (per-frame time `[B, F]`).
        Models that take given frames only as channels (no held frames) keep `x_t, t`."""
        held = torch.zeros(noise.shape[2], dtype=torch.bool, device=noise.device)
        held[idx] = True

        def free_input(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            if t.ndim < 2:
                return x_t, t
            t_gen = t.masked_fill(held, float("-inf")).amax(dim=1, keepdim=True).expand_as(t)
            noised, _ = D.add_noise(x_t, noise.expand_as(x_t).to(x_t.dtype), t_gen, schedule)
            return torch.where(held[None, None, :, None, None], noised, x_t), t_gen

        return free_input

    @torch.no_grad()
    def denoise_latents(self, noise: Tensor, text: tuple[Tensor, Tensor], *,
                        uncond_text: tuple[Tensor, Tensor] | None = None, guidance_scale=1.0,
                        given: Tensor | None = None, given_index: int | Sequence[int] = 0,
                        history_guidance: float = 1.0, context_noise: float = 0.0, sampler: str | None = None,
                        num_inference_steps: int | None = None, generator: torch.Generator | None = None,
                        progress: bool = False, callback=None) -> Tensor:
        """Sample latents from `noise` `[B, C, F, H, W]` with the given frames (if any) at
        `given_index` held clean (`image_conditioning="clean_frames"`: placed into x and kept at
        t = 0, so they come back bit-identical) and/or passed as channels (concat models).

        context_noise t_c > 0: the model sees the given frames noised once to `t_c`,
        `alpha(t_c) x + sigma(t_c) eps`, held at that time (and so in the channels), for models
        trained with `diffusion.context_noise`; the result still holds the clean given frames.
        Sampling builds no autograd graph, whoever calls it."""
        sch = self.scheduler
        sampler = sampler or sch.sampler
        steps = num_inference_steps or sch.num_inference_steps
        b, c, fz, hz, wz = noise.shape
        if not 0 <= context_noise < 1:
            raise ValueError(f"context_noise must be in [0, 1), got {context_noise}")
        clean = given
        noisy_context = given is not None and context_noise > 0
        if noisy_context:
            eps = D.independent_noise(tuple(given.shape), generator=generator).to(given)
            level = torch.full((given.shape[0],), float(context_noise), device=given.device)
            given, _ = D.add_noise(given, eps, level, sch.make_schedule())
        denoise = self.make_denoiser(text, (c, fz, hz, wz), uncond_text=uncond_text, guidance_scale=guidance_scale,
                                     given=given, given_index=given_index, history_guidance=history_guidance,
                                     generator=generator)
        x = noise.clone()
        times = sch.times(sampler, steps).to(self.device)
        if given is not None and self.config.image_conditioning == "clean_frames":
            idx = self.given_indices(given_index, fz)
            if given.shape[2] != len(idx):
                raise ValueError(f"{given.shape[2]} given latent frames but {len(idx)} indices {idx}")
            times = self.held_times(times, b, fz, idx, level=float(context_noise))
            x[:, :, idx] = given.to(x.dtype).expand(b, -1, -1, -1, -1)
        out = sch.sample(denoise, x, times, sampler, generator=generator, progress=progress, callback=callback)
        if noisy_context and self.config.image_conditioning == "clean_frames":
            out[:, :, self.given_indices(given_index, fz)] = clean.to(out.dtype).expand(b, -1, -1, -1, -1)
        return out

    # -- generation -----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        *,
        negative_prompt: str = "",
        image=None,
        video: np.ndarray | Tensor | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | tuple[float, float] | Tensor | None = None,
        history_guidance: float = 1.0,
        sampler: str | None = None,
        noise_prior: str = "independent",
        noise_strength: float = 0.5,
        seed: int = 0,
        generator: torch.Generator | None = None,
        return_latents: bool = False,
        progress: bool = True,
        callback=None,
    ) -> PipelineOutput:
        """Generate a video.

        prompt: a caption, or a list of captions (a batch).
        image: optional first frame (path, PIL image, uint8 [H,W,3]) -> image-to-video.
        video: optional leading frames uint8 [K,H,W,3] (continuation); K is cut to 1 + r*m.
        guidance_scale: a number, a (min, max) pair for an SVD-style per-frame ramp, or a
            per-latent-frame tensor [F_z]. 1 disables classifier-free guidance (one forward).
        history_guidance: h > 1 strengthens the given frames (image / video) against the
            prediction without them, h < 1 weakens them (history guidance, one more model branch);
            1 (default) is off.
        noise_prior: "independent", "mixed" (shared fraction = noise_strength) or
            "progressive" (AR(1) correlation = noise_strength) initial noise over frames.
        """
        t0 = time.perf_counter()
        req = self.resolve_request(prompt, num_frames=num_frames, height=height, width=width,
                                   num_inference_steps=num_inference_steps, sampler=sampler,
                                   guidance_scale=guidance_scale, seed=seed, generator=generator)
        prompts, batch, height, width, num_frames = req.prompts, len(req.prompts), req.height, req.width, req.num_frames
        scale, generator = req.guidance_scale, req.generator
        self.warn_unknown_words(prompts)

        c, fz, hz, wz = self.vae.latent_shape(num_frames, height, width)
        given, n_given = self._given_latents(image, video, height, width)
        if given is not None and n_given > fz:
            raise ValueError(f"{n_given} given latent frames exceed the {fz} latent frames of a {num_frames}-frame video")

        text = self.encode_prompts(prompts)
        use_cfg = not (isinstance(scale, (int, float)) and float(scale) == 1.0)
        uncond_text = self.encode_prompts([negative_prompt] * batch) if use_cfg else None
        x = self.initial_noise((batch, c, fz, hz, wz), noise_prior, noise_strength, generator).to(self.device)
        latents = self.denoise_latents(x, text, uncond_text=uncond_text, guidance_scale=scale, given=given,
                                       given_index=n_given, history_guidance=history_guidance, sampler=req.sampler,
                                       num_inference_steps=req.steps, generator=generator, progress=progress,
                                       callback=callback)
        out = np.stack([tensor_to_frames(video) for video in self.decode_latents(latents)])
        return PipelineOutput(frames=out[0] if req.single else out, latents=latents if return_latents else None,
                              seconds=time.perf_counter() - t0)

    def resolve_request(self, prompt: str | list[str], *, num_frames: int | None, height: int | None,
                        width: int | None, num_inference_steps: int | None, sampler: str | None, guidance_scale,
                        seed: int, generator: torch.Generator | None) -> Request:
        """A generation call's arguments with the pipeline's defaults filled in (`None` -> the
        model folder's frames / size, the scheduler's steps / sampler / guidance; no generator ->
        one seeded with `seed`); the frame count is checked against the VAE's."""
        cfg, sch = self.config, self.scheduler
        single = isinstance(prompt, str)
        return Request(
            prompts=[prompt] if single else list(prompt), single=single,
            num_frames=self.valid_num_frames(num_frames or cfg.num_frames),
            height=height or cfg.height, width=width or cfg.width,
            steps=num_inference_steps or sch.num_inference_steps, sampler=sampler or sch.sampler,
            guidance_scale=sch.guidance_scale if guidance_scale is None else guidance_scale,
            generator=torch.Generator().manual_seed(int(seed)) if generator is None else generator)

    def _given_latents(self, image, video, height: int, width: int) -> tuple[Tensor | None, int]:
        """Encode the conditioning frames: a first frame, or the leading frames of a video."""
        if image is not None and video is not None:
            raise ValueError("give either image (first frame) or video (leading frames), not both")
        if image is not None:
            pixels = self.prepare_image(image, height, width)
        elif video is not None:
            arr = video.cpu().numpy() if isinstance(video, Tensor) else np.asarray(video)
            if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
                raise ValueError(f"video must be uint8 [K, H, W, 3], got {arr.dtype} {arr.shape}")
            r = self.vae.temporal_factor
            keep = 1 + (arr.shape[0] - 1) // r * r
            if arr.shape[1:3] != (height, width):
                arr = np.stack([fit_image(f, (height, width)) for f in arr])
            pixels = frames_to_tensor(arr[:keep])[None].to(self.device)
        else:
            return None, 0
        given = self.encode_frames(pixels)
        return given, given.shape[2]

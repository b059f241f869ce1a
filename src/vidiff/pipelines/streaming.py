"""Causal streaming: generate a video chunk after chunk with a block-causal VideoDiT
(`attention="causal"`), reusing the keys and values of the frames already made.

With block-causal attention a token sees its own frame and earlier frames only, so the hidden
states of finished frames (clean, t = 0) do not depend on what comes after them: in every layer
their keys and values are the same at every sampling step of every later chunk. They are
computed once, when a chunk is finished (`CausalDiTStream.commit`: one forward of the clean
chunk at t = 0, given as conditioning frames exactly as `VideoPipeline` holds given frames), and
a new chunk's forward attends to `[cached keys; its own keys]` (`VideoDiT(..., kv_cache=...)`).
This equals running the model on `[all past frames held clean; the chunk]` at every step
(tested), at the cost of the chunk alone.

RoPE: the chunk's tokens take frame positions after the cached ones; cached keys keep the
rotation of their own positions. Scores depend only on position differences, so evicting old
frames (`max_cache_frames`) keeps the rest valid; with eviction the result is the usual
rolling-cache approximation (a kept frame's keys were computed while the evicted frames were
still visible), and memory stays flat. Without eviction the cache grows by one frame's
keys/values per layer per latent frame.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from vidiff import diffusion as D
from vidiff.models.conditioning import Conditioning
from vidiff.models.dit import KVCache
from vidiff.pipelines.long import StreamingDecoder, WindowChunk, WindowInfo, latent_to_frames, prompt_schedule, \
    to_uint8, window_prompt


class CausalDiTStream:
    """A causal VideoDiT with a key/value cache of past frames (`cache`, a `KVCache`).

    `stream(x_t, t, cond)` predicts for the next frames (the cache is read, not changed);
    `commit(latents, cond)` appends clean frames to the cache. The batch of every call must match
    the batch the cache was built with (2 B with classifier-free guidance: cond and uncond rows).
    """

    def __init__(self, model, max_cache_frames: int | None = None):
        cfg = model.config
        if cfg.attention != "causal":
            raise ValueError(f"causal streaming needs a VideoDiT with attention='causal', got {cfg.attention!r}")
        if max_cache_frames is not None and max_cache_frames < 1:
            raise ValueError(f"max_cache_frames must be >= 1 or None, got {max_cache_frames}")
        self.model, self.config = model, cfg
        self.max_cache_frames = max_cache_frames
        self.reset()

    def reset(self) -> None:
        self.cache = KVCache.for_model(self.model)

    def __call__(self, x_t: Tensor, t: Tensor, cond: Conditioning | None = None) -> Tensor:
        return self.stream(x_t, t, cond)

    @torch.no_grad()
    def stream(self, x_t: Tensor, t: Tensor, cond: Conditioning | None = None) -> Tensor:
        """Prediction for `x_t` `[B, C, f, H, W]`, the f latent frames after the cached ones."""
        self._frames(x_t)
        out = self.model(x_t, t, cond, kv_cache=self.cache)
        self.cache.discard()
        return out

    @torch.no_grad()
    def commit(self, latents: Tensor, cond: Conditioning | None = None) -> None:
        """Append clean `latents` `[B, C, f, H, W]` (t = 0) to the cache; `cond` should give them as
        conditioning frames (frame_mask 1, image_latent = latents) for concat models."""
        frames = self._frames(latents)
        self.model(latents, torch.zeros(latents.shape[0], device=latents.device), cond, kv_cache=self.cache)
        self.cache.append(frames)
        if self.max_cache_frames is not None:
            _, ph, pw = self.config.patch_size
            per_frame = (latents.shape[3] // ph) * (latents.shape[4] // pw)
            self.cache.keep_last(self.max_cache_frames * per_frame)

    def _frames(self, x: Tensor) -> int:
        pt = self.config.patch_size[0]
        if x.shape[2] % pt:
            raise ValueError(f"chunks must be a multiple of the temporal patch {pt} frames, got {x.shape[2]}")
        return x.shape[2] // pt


def clip_cache_frames(pipe, chunk: int, window: int | None = None, height: int | None = None,
                      width: int | None = None) -> int:
    """`max_cache_frames` that keeps each chunk's attention span at `window` latent frames
    (default: the pipeline's clip length, what the model was trained on): `window - chunk`."""
    window = window or pipe.vae.latent_shape(pipe.config.num_frames, height or pipe.config.height,
                                             width or pipe.config.width)[1]
    if not 1 <= chunk < window:
        raise ValueError(f"chunk {chunk} must be in [1, window={window}) latent frames")
    return window - chunk


@torch.no_grad()
def iter_causal(pipe, prompt: str | None = None, *, prompts=None, num_frames: int | None = None, chunk: int = 1,
                max_cache_frames: int | None = None, negative_prompt: str = "", image=None,
                height: int | None = None, width: int | None = None, num_inference_steps: int | None = None,
                guidance_scale=None, sampler: str | None = None, seed: int = 0,
                generator: torch.Generator | None = None, return_latents: bool = True) -> Iterator[WindowChunk]:
    """Stream a video from a causal VideoDiT, `chunk` latent frames at a time, each sampled with
    the cached keys/values of everything before it; yields `WindowChunk`s (decoded incrementally).

    max_cache_frames: latent frames kept in the cache (None: all; a bound keeps memory flat and
    the attention span near the training length, e.g. window - chunk).
    prompts: a schedule as in `vidiff.pipelines.long` (the cache keeps what earlier frames saw).
    image: a first frame, committed to the cache before the first chunk.
    """
    cfg, sch = pipe.config, pipe.scheduler
    if (prompt is None) == (prompts is None):
        raise ValueError("give either prompt (one caption) or prompts (a schedule), not both or neither")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 latent frames, got {chunk}")
    height, width = height or cfg.height, width or cfg.width
    num_frames = pipe.valid_num_frames(num_frames or cfg.num_frames)
    c, total, hz, wz = pipe.vae.latent_shape(num_frames, height, width)
    r = pipe.vae.temporal_factor
    schedule = prompt_schedule(prompt if prompts is None else prompts, num_frames)
    steps = num_inference_steps or sch.num_inference_steps
    sampler = sampler or sch.sampler
    scale = sch.guidance_scale if guidance_scale is None else guidance_scale
    generator = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    use_cfg = not (isinstance(scale, (int, float)) and float(scale) == 1.0)
    uncond_text = pipe.encode_prompts([negative_prompt]) if use_cfg else None
    schedule_fn = sch.make_schedule()
    stream = CausalDiTStream(pipe.transformer, max_cache_frames)
    texts: dict[str, tuple[Tensor, Tensor]] = {}

    def conds(prompt: str, shape, given=None):
        if prompt not in texts:
            texts[prompt] = pipe.encode_prompts([prompt])
        idx = range(shape[1]) if given is not None else 0
        cond = pipe.build_condition(*texts[prompt], given, idx, 1, shape)
        if not use_cfg:
            return cond, None
        return cond, pipe.build_condition(*uncond_text, given, idx, 1, shape)

    def commit(latents: Tensor, prompt: str) -> None:
        cond, uncond = conds(prompt, (c, latents.shape[2], hz, wz), given=latents)
        if uncond is None:
            stream.commit(latents, cond)
        else:
            stream.commit(torch.cat([latents, latents]), Conditioning.cat([cond, uncond]))

    given, n_given = pipe._given_latents(image, None, height, width)
    with StreamingDecoder(pipe) as dec:
        start, index = 0, 0
        if given is not None:
            commit(given, window_prompt(schedule, 0, 1))
            yield WindowChunk(index, 0, to_uint8(dec.decode(given)), WindowInfo(0, 0, n_given, n_given, 0, 1,
                                                                                schedule[0].prompt), given)
            start, index = n_given, 1
        while start < total:
            end = min(start + chunk, total)
            a, b = latent_to_frames(start, end, r)
            prompt_k = window_prompt(schedule, a, b)
            shape = (c, end - start, hz, wz)
            cond, uncond = conds(prompt_k, shape)
            model_fn = stream if uncond is None else D.guided_denoiser(stream, cond, uncond, scale)
            denoise = D.x0_denoiser(model_fn, schedule_fn, sch.prediction_type, cond)
            noise = pipe.initial_noise((1, *shape), "independent", 0.0, generator).to(pipe.device)
            times = sch.times(sampler, steps).to(pipe.device)
            latents = sch.sample(denoise, noise, times, sampler, generator=generator)
            commit(latents, prompt_k)
            info = WindowInfo(index, start, end, 0, a, b, prompt_k)
            yield WindowChunk(index, a, to_uint8(dec.decode(latents)), info, latents if return_latents else None)
            start, index = end, index + 1

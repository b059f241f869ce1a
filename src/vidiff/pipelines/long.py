"""Long videos from a model trained on short clips: sliding windows, fused windows, keyframes
then interpolation, prompt schedules, and window-by-window streaming output.

Everything works in latent frames (`F_z`); with a causal VAE of temporal factor r, latent 0 is
video frame 0 and latent j > 0 is video frames r j - r + 1 .. r j. A model call never sees more
than `window` latent frames, so the network's memory does not depend on the video's length.

Modes (`mode=`):

* "window" — sliding windows. Window k covers latents [s_k, s_k + W); its first o_k latents are
  the last o_k latents of window k-1, held clean (t = 0 through every step, per-frame time; and
  as `frame_mask`/`image_latent` channels for concat models), the rest is sampled. Starts are
  `s_{k+1} = s_k + W - overlap`, the last window is moved back to end at the last frame (its
  overlap is then larger). Windows stream out as soon as they are sampled.
* "fuse" — MultiDiffusion-style co-denoising: all windows move through the sampler together;
  at every step each window predicts x0 for its frames and the predictions are averaged with
  weights that ramp linearly across the overlaps and sum to one per frame (`fuse_weights`).
  The model still sees at most W frames per call, but the latent state of the whole video
  (about 1/100 of its pixels) lives through sampling and nothing is final before the last step.
  Nothing is held, so windows agree only through the frames they share: the default overlap is
  half the window (`default_overlap`), and with repeated noise (below) each window also starts
  where the first did.
* "keyframes" — hierarchical: first G + 1 keyframe latents (sparse in time, generated as a
  short video, with `keyframe_extras` such as a lower "fps" for models that take it), then each
  gap of at most W - 1 latents is filled by one window whose first and last latent frames are
  the two keyframes, held clean. Keyframe i sits at latent `round(i (F_z - 1) / G)`.
  What the model must know: (a) for the keyframe pass, a frame rate W - 1 times lower than
  its clips (an "fps" condition trained with frame-stride augmentation); without it the
  keyframes move at the clip's pace and the final video is about W - 1 times slower; (b) for
  the gaps, a clean last frame as well as a clean first one (train with random given-frame
  sets, e.g. first and last, through per-frame time / `frame_mask`). With a causal VAE
  (r > 1) a keyframe latent is an r-frame chunk, so "held exactly" is exact in latent space.

Where window k + 1 takes its overlap from (`overlap_space=`):

* "latent" (default) — the previous window's latents, bit for bit; the whole video is one
  latent sequence, decoded incrementally with the causal VAE's frame caches (one latent frame at
  a time, memory flat), so there is no decoding seam. The price: for r > 1 a window's first
  latent is then an r-frame chunk latent where training clips always start with a single-frame
  latent; a model trained on random latent crops of longer clips has seen this, one trained on
  clips encoded from their first frame has not.
* "pixel" — the last 1 + r (o - 1) decoded video frames of the previous window are encoded again
  as the start of the next window (so its first latent is a one-frame latent, as in training);
  each window is decoded on its own and its first 1 + r (o - 1) frames are dropped. Seams then
  carry the VAE's round-trip error; measure them with `vidiff.metrics.seams`.

Where a window's initial noise comes from (`window_noise=`):

* "fresh" — every window draws its own noise from the generator.
* "repeat" — every window starts from the same noise as the first window of its length (the
  noise of its held frames is never used; fused windows share one noise sequence that repeats
  with their stride, `periodic_window_noise`, so each starts from the same noise). Much of an object's
  size and look is settled in the first, high-noise steps, from the noise as much as from the
  caption and the held frames; fresh noise draws those anew at every hand-off, repeated noise
  settles them the same way in every window. The held frames still decide where the object is
  and the caption where it goes. FreeNoise (Qiu et al. 2024) reuses noise frames across windows
  too, shuffled. On the world model repeated noise lowered the identity drift of 129-frame
  videos from 0.115 to 0.094 with sliding windows (most of it on a fast bouncing object), and
  with fused windows (overlap 4 of 9, 2 seeds) from 4.6x their 17-frame drift to 1.0x
  (README, "Long videos").

Prompt schedules: `prompts=[(prompt, n_frames), ...]` (or plain prompts split evenly). Each
window takes the prompt of the segment that holds the middle frame of the frames it adds
(`window_prompt`); the subject carries over because the overlap is held. With a `(prompt,
None)` last entry the last segment takes the remaining frames.

    from vidiff.pipelines.long import generate_long, iter_windows
    out = generate_long(pipe, "a large red circle moves right on a black background", num_frames=129)
    for chunk in iter_windows(pipe, prompts=[("... moves right ...", 64), ("... moves left ...", None)],
                              num_frames=129):
        write(chunk.frames)            # uint8 [n, H, W, 3], video frames chunk.start .. chunk.start + n - 1
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from vidiff.video import tensor_to_frames

LONG_MODES = ("window", "fuse", "keyframes")
OVERLAP_SPACES = ("latent", "pixel")
WINDOW_NOISES = ("fresh", "repeat")


# --------------------------------------------------------------------------- planning (pure)


def window_starts(total: int, window: int, overlap: int) -> list[int]:
    """Start latent index of each window covering `total` latents with windows of `window`.

    `s_0 = 0`, `s_{k+1} = s_k + window - overlap` while `s_k + window < total`; the last start is
    `total - window` (so the last overlap can be larger than `overlap`). One window [0] when
    `total <= window`."""
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window, got window={window}, overlap={overlap}")
    if total <= window:
        return [0]
    starts = [0]
    while starts[-1] + window < total:
        starts.append(min(starts[-1] + window - overlap, total - window))
    return starts


def periodic_window_noise(base: Tensor, stride: int, total: int) -> Tensor:
    """Noise for `total` latent frames that repeats with the window stride: `noise[t] =
    base[t mod stride]`, from the first `stride` frames of `base` `[B, C, >= stride, H, W]`.

    Fused windows start every `stride = window - overlap` latents, so every window (but a last
    one moved back to end at the last frame) starts from the very same noise, overlaps included:
    they all begin the same trajectory and fusing has little to reconcile."""
    if not 1 <= stride <= base.shape[2]:
        raise ValueError(f"stride must be in [1, {base.shape[2]}] (the frames of base), got {stride}")
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total}")
    return base[:, :, torch.arange(total, device=base.device) % stride]


def fuse_weights(starts: Sequence[int], window: int, total: int) -> Tensor:
    """Per-window, per-frame fusion weights `[K, total]` (float64) that sum to one over windows.

    Raw weight of local frame j in a window of W frames: `min(j + 1, W - j)` (a tent, so a frame
    near a window's edge — where that window saw little context — counts less), zero outside the
    window; normalised per frame: `w_k(f) = raw_k(f) / sum_k raw_k(f)`."""
    n = min(window, total)
    raw = torch.zeros(len(starts), total, dtype=torch.float64)
    j = torch.arange(n, dtype=torch.float64)
    tent = torch.minimum(j + 1, n - j)
    for k, s in enumerate(starts):
        if s < 0 or s + n > total:
            raise ValueError(f"window {k} [{s}, {s + n}) lies outside [0, {total})")
        raw[k, s : s + n] = tent
    cover = raw.sum(0)
    if bool((cover == 0).any()):
        raise ValueError(f"windows starting at {list(starts)} leave latent frames uncovered")
    return raw / cover


def keyframe_positions(total: int, window: int) -> list[int]:
    """Latent indices of the keyframes: `round(i (total - 1) / G)`, i = 0..G,
    `G = ceil((total - 1) / (window - 1))`, so every gap spans at most `window` latents."""
    if window < 2:
        raise ValueError(f"keyframe interpolation needs window >= 2, got {window}")
    if total <= 1:
        return [0]
    gaps = math.ceil((total - 1) / (window - 1))
    return [round(i * (total - 1) / gaps) for i in range(gaps + 1)]


def latent_to_frames(start: int, end: int, r: int) -> tuple[int, int]:
    """Video frames `[a, b)` coded by latents `[start, end)` of a causal VAE with factor r
    (latent 0 -> frame 0, latent j > 0 -> frames r j - r + 1 .. r j)."""
    a = 0 if start == 0 else r * (start - 1) + 1
    b = 0 if end == 0 else r * (end - 1) + 1
    return a, b


def default_overlap(window: int, mode: str) -> int:
    """Latent frames shared by consecutive windows when not told: 1 for sliding windows and
    keyframe gaps; half the window for fused windows, whose windows hold nothing and agree only
    through what they share (world model, 129 frames, 6 seeds: identity drift 2.26x its 17-frame
    value at an overlap of 1, 1.32x at 2, 1.05x at 4 of 9; README, "Long videos")."""
    return max(1, window // 2) if mode == "fuse" else 1


def default_context_noise(pipe, mode: str) -> float:
    """The level at which `mode` shows a window its generated held frames when not told: the
    pipeline's `scheduler.context_noise` for sliding-window overlaps, 0 (clean) for keyframe
    gaps, which must meet both ends (on the world model noisy keyframes made the gaps drift more)."""
    return pipe.scheduler.context_noise if mode == "window" else 0.0


@dataclass
class PromptSegment:
    """`prompt` for video frames `[start, end)`."""

    prompt: str
    start: int
    end: int


def prompt_schedule(prompts, num_frames: int) -> list[PromptSegment]:
    """A prompt schedule over `num_frames` video frames.

    `prompts`: a str (one segment), a list of str (split evenly), or a list of
    `(prompt, n_frames)` pairs with n_frames > 0 (the last may be None: the rest). The last
    segment always ends at `num_frames` (the total may have been rounded to what the VAE makes);
    a schedule that runs out before the last segment starts is an error."""
    if isinstance(prompts, str):
        prompts = [(prompts, None)]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("the prompt schedule is empty")
    if all(isinstance(p, str) for p in prompts):
        n = len(prompts)
        edges = [round(i * num_frames / n) for i in range(n + 1)]
        return [PromptSegment(p, edges[i], edges[i + 1]) for i, p in enumerate(prompts)]
    segments, start = [], 0
    for i, item in enumerate(prompts):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(f"prompt schedule entry {i} must be (prompt, n_frames), got {item!r}")
        prompt, n = item
        last = i == len(prompts) - 1
        if n is None and not last:
            raise ValueError(f"prompt schedule entry {i} ({prompt!r}): only the last entry may leave n_frames None")
        if n is not None and (not isinstance(n, int) or n < 1):
            raise ValueError(f"prompt schedule entry {i} ({prompt!r}): n_frames must be a positive int, got {n!r}")
        end = num_frames if last else start + n
        if end <= start or (not last and end >= num_frames):
            raise ValueError(f"prompt schedule entry {i} ({prompt!r}) starts at frame {start}, but the video has "
                             f"{num_frames} frames and later entries need room")
        segments.append(PromptSegment(prompt, start, end))
        start = end
    return segments


def prompt_at(schedule: Sequence[PromptSegment], frame: int) -> str:
    """The prompt of the segment that holds video frame `frame`."""
    for seg in schedule:
        if seg.start <= frame < seg.end:
            return seg.prompt
    return schedule[-1].prompt if frame >= schedule[-1].end else schedule[0].prompt


def window_prompt(schedule: Sequence[PromptSegment], first: int, end: int) -> str:
    """The prompt for a window that adds video frames `[first, end)`: the segment of their middle
    frame `(first + end - 1) // 2`."""
    return prompt_at(schedule, (first + end - 1) // 2)


@dataclass
class WindowInfo:
    """One window: latents `[latent_start, latent_end)`, of which the first `held` were given
    (held clean); it adds video frames `[first_frame, end_frame)` with `prompt`."""

    index: int
    latent_start: int
    latent_end: int
    held: int
    first_frame: int
    end_frame: int
    prompt: str
    held_index: tuple[int, ...] = ()


@dataclass
class WindowChunk:
    """What `iter_windows` yields: `frames` uint8 `[n, H, W, 3]` = video frames
    `start .. start + n - 1`, and the window that made them (`latents`: its local latents)."""

    index: int
    start: int
    frames: np.ndarray
    info: WindowInfo
    latents: Tensor | None = None


@dataclass
class LongOutput:
    """`frames` uint8 `[F, H, W, 3]`; `boundaries`: the first video frame of each window after
    the first (seams are between `b - 1` and `b`); `windows`: the plan; `latents`: the whole
    latent sequence when asked for (latent overlap space only)."""

    frames: np.ndarray
    boundaries: list[int]
    windows: list[WindowInfo]
    latents: Tensor | None = None
    seconds: float = 0.0
    keyframes: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------- decoding


class StreamingDecoder:
    """Decode one long latent sequence piece by piece: `decode(latents)` takes the next latent
    frames and returns their video frames. With a `CausalVAE3D` the decoder's per-layer frame
    caches carry the past (as its own chunked `decode`, one latent frame at a time), so the
    result equals decoding the whole sequence at once and memory does not grow with length.
    Use as a context manager (the caches live on the VAE's layers until exit)."""

    def __init__(self, pipe):
        from vidiff.models.vae import CausalVAE3D

        self.pipe, self.vae = pipe, pipe.vae
        self.causal = isinstance(self.vae, CausalVAE3D)
        if not self.causal and self.vae.temporal_factor != 1:
            raise ValueError(f"streaming decode needs a CausalVAE3D or a per-frame VAE, got {type(self.vae).__name__}")
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "StreamingDecoder":
        from vidiff.nn.causal_conv import streaming

        if self.causal:
            self._stack.enter_context(streaming(self.vae.decoder))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents `[B, C, n, H, W]` (the next n of the sequence) -> video frames in [-1, 1]."""
        vae = self.vae
        z = vae.denormalize(latents)
        if not self.causal:
            return vae.decode(z).clamp(-1, 1)
        # the decoder's caches persist across calls because the streaming context is ours
        return torch.cat([vae.decode_next(z[:, :, j : j + 1]) for j in range(z.shape[2])], dim=2).clamp(-1, 1)


def to_uint8(frames: Tensor) -> np.ndarray:
    """Video `[B, 3, F, H, W]` in [-1, 1] -> uint8 `[F, H, W, 3]` of the first sample."""
    return tensor_to_frames(frames[0])


# --------------------------------------------------------------------------- generation


@contextlib.contextmanager
def _extras(pipe, extras: dict | None):
    """Temporarily override the pipeline's scalar conditions (the keyframe pass's fps)."""
    if not extras:
        yield
        return
    saved = pipe.config.extras
    pipe.config.extras = {**saved, **extras}
    try:
        yield
    finally:
        pipe.config.extras = saved


class _Run:
    """The resolved settings of one long generation (shared by the modes)."""

    def __init__(self, pipe, prompt, prompts, num_frames, window, overlap, mode, overlap_space, negative_prompt,
                 image, video, height, width, num_inference_steps, guidance_scale, history_guidance,
                 context_noise, sampler, noise_prior, noise_strength, seed, generator, keyframe_extras, progress,
                 window_noise):
        cfg, sch = pipe.config, pipe.scheduler
        if mode not in LONG_MODES:
            raise ValueError(f"unknown long-video mode {mode!r}; expected one of {LONG_MODES}")
        if overlap_space not in OVERLAP_SPACES:
            raise ValueError(f"unknown overlap_space {overlap_space!r}; expected one of {OVERLAP_SPACES}")
        if window_noise not in WINDOW_NOISES:
            raise ValueError(f"unknown window_noise {window_noise!r}; expected one of {WINDOW_NOISES}")
        self.window_noise = window_noise
        self._first_noise: dict[int, Tensor] = {}
        if overlap_space == "pixel" and mode != "window":
            raise ValueError(f"overlap_space='pixel' applies to mode='window' only, not {mode!r}")
        if (prompt is None) == (prompts is None):
            raise ValueError("give either prompt (one caption) or prompts (a schedule), not both or neither")
        self.pipe, self.mode, self.overlap_space = pipe, mode, overlap_space
        self.r = pipe.vae.temporal_factor
        self.height, self.width = height or cfg.height, width or cfg.width
        if num_frames is None and prompts is not None and all(isinstance(p, (tuple, list)) for p in prompts) \
                and all(n is not None for _, n in prompts):
            num_frames = sum(n for _, n in prompts)
        self.num_frames = pipe.valid_num_frames(num_frames or cfg.num_frames)
        self.c, self.total, self.hz, self.wz = pipe.vae.latent_shape(self.num_frames, self.height, self.width)
        self.window = window or pipe.vae.latent_shape(pipe.valid_num_frames(cfg.num_frames), self.height, self.width)[1]
        overlap = default_overlap(self.window, mode) if overlap is None else overlap
        if not 0 <= overlap < self.window or (mode != "keyframes" and overlap < 1 and self.total > self.window):
            raise ValueError(f"overlap must be in [1, window={self.window}) latent frames, got {overlap}")
        self.overlap = overlap
        self.schedule = prompt_schedule(prompt if prompts is None else prompts, self.num_frames)
        self.steps = num_inference_steps or sch.num_inference_steps
        self.sampler = sampler or sch.sampler
        self.scale = sch.guidance_scale if guidance_scale is None else guidance_scale
        self.history_guidance = history_guidance
        self.context_noise = default_context_noise(pipe, mode) if context_noise is None else context_noise
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"context_noise must be in [0, 1), got {self.context_noise}")
        self.noise_prior, self.noise_strength = noise_prior, noise_strength
        self.generator = generator if generator is not None else torch.Generator().manual_seed(int(seed))
        self.keyframe_extras = keyframe_extras
        self.progress = progress
        pipe.warn_unknown_words([s.prompt for s in self.schedule])
        self._texts: dict[str, tuple[Tensor, Tensor]] = {}
        use_cfg = not (isinstance(self.scale, (int, float)) and float(self.scale) == 1.0)
        self.uncond = pipe.encode_prompts([negative_prompt]) if use_cfg else None
        self.given, self.n_given = pipe._given_latents(image, video, self.height, self.width)
        if self.given is not None and self.n_given >= self.window:
            raise ValueError(f"{self.n_given} given latent frames leave nothing to generate in a window of {self.window}")
        if mode == "keyframes" and self.n_given > 1:
            raise ValueError("keyframe mode takes a first frame (image=), not leading video frames")

    def text(self, prompt: str) -> tuple[Tensor, Tensor]:
        if prompt not in self._texts:
            self._texts[prompt] = self.pipe.encode_prompts([prompt])
        return self._texts[prompt]

    def noise(self, frames: int) -> Tensor:
        """A window's initial noise: a fresh draw, or with window_noise="repeat" the first draw of
        that many frames again (see the module docstring)."""
        if self.window_noise == "repeat" and frames in self._first_noise:
            return self._first_noise[frames].clone()
        shape = (1, self.c, frames, self.hz, self.wz)
        x = self.pipe.initial_noise(shape, self.noise_prior, self.noise_strength, self.generator).to(self.pipe.device)
        if self.window_noise == "repeat":
            self._first_noise[frames] = x.clone()
        return x

    def sample(self, noise: Tensor, prompt: str, given: Tensor | None, given_index, generated: bool = True) -> Tensor:
        """Sample one window; `generated`: its given frames come from earlier windows (not from
        the user's image or video), so they get `context_noise`."""
        return self.pipe.denoise_latents(
            noise, self.text(prompt), uncond_text=self.uncond, guidance_scale=self.scale, given=given,
            given_index=given_index, history_guidance=self.history_guidance,
            context_noise=self.context_noise if generated else 0.0, sampler=self.sampler,
            num_inference_steps=self.steps, generator=self.generator, progress=self.progress)

    def plan(self, total: int, schedule_frame=None) -> list[WindowInfo]:
        """Sliding windows over `total` latents (video frames mapped by `schedule_frame`)."""
        infos, prev_end = [], 0
        for k, s in enumerate(window_starts(total, self.window, self.overlap)):
            e = min(s + self.window, total)
            held = prev_end - s if k else self.n_given
            a, b = latent_to_frames(s + (held if k else 0), e, self.r)
            if schedule_frame is not None:
                a, b = schedule_frame(s + (held if k else 0)), schedule_frame(e - 1) + 1
            infos.append(WindowInfo(k, s, e, held, a, b, window_prompt(self.schedule, a, b), tuple(range(held))))
            prev_end = e
        return infos


def _sliding_latents(run: _Run, infos: list[WindowInfo], first_given: Tensor | None) -> Iterator[tuple[WindowInfo, Tensor]]:
    """Window mode in latent space: yield (window, its local latents) one window at a time."""
    prev = None
    for info in infos:
        n = info.latent_end - info.latent_start
        if info.index == 0:
            given, idx = first_given, info.held_index
        else:
            given, idx = prev[:, :, prev.shape[2] - info.held:], info.held_index
        latents = run.sample(run.noise(n), info.prompt, given, idx, generated=info.index > 0)
        yield info, latents
        prev = latents


def _iter_window_mode(run: _Run) -> Iterator[WindowChunk]:
    infos = run.plan(run.total)
    if run.overlap_space == "latent":
        with StreamingDecoder(run.pipe) as dec:
            for info, lat in _sliding_latents(run, infos, run.given):
                new = lat if info.index == 0 else lat[:, :, info.held:]
                yield WindowChunk(info.index, info.first_frame, to_uint8(dec.decode(new)), info, lat)
        return
    # pixel overlap: re-encode the tail of the previous window's video as the next window's start
    tail = None
    for info in infos:
        n = info.latent_end - info.latent_start
        if info.index == 0:
            given, idx = run.given, info.held_index
        else:
            given, idx = run.pipe.encode_frames(tail[:, :, -(1 + run.r * (info.held - 1)):]), info.held_index
        lat = run.sample(run.noise(n), info.prompt, given, idx, generated=info.index > 0)
        video = run.pipe.decode_latents(lat)
        new = video if info.index == 0 else video[:, :, 1 + run.r * (info.held - 1):]
        tail = video
        yield WindowChunk(info.index, info.first_frame, to_uint8(new), info, lat)


def _fused_latents(run: _Run, infos: list[WindowInfo]) -> Tensor:
    """Fuse mode: all windows co-denoised, x0 predictions averaged with `fuse_weights`."""
    pipe, sch = run.pipe, run.pipe.scheduler
    total = run.total
    starts = [i.latent_start for i in infos]
    weights = fuse_weights(starts, run.window, total)
    if run.window_noise == "repeat" and len(starts) > 1:  # every window from the same noise
        x = periodic_window_noise(run.noise(run.window), starts[1] - starts[0], total)
    else:
        x = run.noise(total)
    times = sch.times(run.sampler, run.steps).to(pipe.device)
    given_index = list(range(run.n_given))
    if run.given is not None and pipe.config.image_conditioning == "clean_frames":
        times = pipe.held_times(times, 1, total, given_index)
        x[:, :, given_index] = run.given.to(x.dtype)
    denoisers = []
    for info in infos:
        s, e = info.latent_start, info.latent_end
        local = [i - s for i in given_index if s <= i < e]
        given = run.given[:, :, [i + s for i in local]] if local else None
        den = pipe.make_denoiser(run.text(info.prompt), (run.c, e - s, run.hz, run.wz), uncond_text=run.uncond,
                                 guidance_scale=run.scale, given=given, given_index=local)
        w = weights[:, s:e][info.index].to(device=x.device, dtype=x.dtype).view(1, 1, -1, 1, 1)
        denoisers.append((s, e, den, w))

    def fused(x_t: Tensor, t: Tensor) -> Tensor:
        out = torch.zeros_like(x_t)
        for s, e, den, w in denoisers:
            out[:, :, s:e] += w * den(x_t[:, :, s:e], t[:, s:e] if t.ndim == 2 else t)
        return out

    return sch.sample(fused, x, times, run.sampler, generator=run.generator, progress=run.progress)


def _keyframe_latents(run: _Run) -> tuple[list[int], Tensor, list[WindowInfo]]:
    """The keyframe pass: latents at `keyframe_positions`, generated as a short (windowed) video."""
    positions = keyframe_positions(run.total, run.window)
    r = run.r
    # the keyframe video's windows, each prompt taken from the final video's frames they stand for
    infos = run.plan(len(positions), schedule_frame=lambda i: latent_to_frames(positions[i], positions[i] + 1, r)[0])
    parts = []
    with _extras(run.pipe, run.keyframe_extras):
        for info, lat in _sliding_latents(run, infos, run.given):
            parts.append(lat if info.index == 0 else lat[:, :, info.held:])
    return positions, torch.cat(parts, dim=2), infos


def _gap_plan(run: _Run, positions: list[int]) -> list[WindowInfo]:
    infos = []
    for i in range(len(positions) - 1):
        s, e = positions[i], positions[i + 1] + 1
        a, b = latent_to_frames(s + (1 if i else 0), e, run.r)
        infos.append(WindowInfo(i, s, e, 1 if i else 0, a, b, window_prompt(run.schedule, a, b), (0, e - s - 1)))
    return infos


def _iter_keyframe_mode(run: _Run) -> Iterator[WindowChunk]:
    positions, keys, _ = _keyframe_latents(run)
    if len(positions) == 1:
        with StreamingDecoder(run.pipe) as dec:
            info = WindowInfo(0, 0, 1, 0, 0, 1, run.schedule[0].prompt)
            yield WindowChunk(0, 0, to_uint8(dec.decode(keys)), info, keys)
        return
    with StreamingDecoder(run.pipe) as dec:
        for info in _gap_plan(run, positions):
            i, n = info.index, info.latent_end - info.latent_start
            given = keys[:, :, [i, i + 1]]
            lat = run.sample(run.noise(n), info.prompt, given, [0, n - 1])
            new = lat if i == 0 else lat[:, :, 1:]
            yield WindowChunk(i, info.first_frame, to_uint8(dec.decode(new)), info, lat)


def _iter_fuse_mode(run: _Run) -> Iterator[WindowChunk]:
    infos = run.plan(run.total)
    latents = _fused_latents(run, infos)
    with StreamingDecoder(run.pipe) as dec:
        for info in infos:
            start = info.latent_start + (info.held if info.index else 0)
            lat = latents[:, :, info.latent_start : info.latent_end]
            yield WindowChunk(info.index, info.first_frame, to_uint8(dec.decode(latents[:, :, start : info.latent_end])),
                              info, lat)


_LONG_DOC = """
    prompt: one caption, or prompts: a schedule (see `prompt_schedule`); exactly one of them.
    num_frames: video frames (rounded to 1 + r k); window / overlap: latent frames per model call
        (default: the pipeline's clip length) and shared by consecutive windows (default:
        `default_overlap`, 1; half the window in fuse mode).
    mode: "window" | "fuse" | "keyframes"; overlap_space: "latent" | "pixel" (window mode).
    image / video: first frame / leading frames to continue (held in the first window).
    keyframe_extras: scalar conditions for the keyframe pass (e.g. {"fps": 1.0}).
    guidance_scale: a number, or a (min, max) ramp over each window's latent frames.
    history_guidance: history guidance on the held frames (overlap / first frame / keyframes): h > 1
        pulls each window towards what they imply, h < 1 towards the prediction without them (less
        drift over long videos, at the price of seams; README "Long videos"); 1 is off.
    context_noise: t_c > 0 shows each window its generated held frames (overlap, keyframes) noised
        to t_c, for models trained with `diffusion.context_noise`: they then correct small errors
        of their context instead of copying them; 0 holds them clean. None (default): in window
        mode the pipeline's `scheduler.context_noise` (0 unless the model's recipe set it; the
        world model's is 0.1, from a sweep in the README, "Long videos"), elsewhere 0 (on the
        world model noisy keyframes made the gaps between them drift more, not less).
    window_noise: "repeat" (default) starts every window from the first window's noise (less
        identity drift over many windows; see the module docstring); "fresh" draws new noise for
        each window.
    Other arguments as `VideoPipeline.__call__`; batch size 1."""


@torch.no_grad()
def iter_windows(pipe, prompt: str | None = None, *, prompts=None, num_frames: int | None = None,
                 window: int | None = None, overlap: int | None = None, mode: str = "window", overlap_space: str = "latent",
                 negative_prompt: str = "", image=None, video=None, height: int | None = None,
                 width: int | None = None, num_inference_steps: int | None = None, guidance_scale=None,
                 history_guidance: float = 1.0, context_noise: float | None = None, sampler: str | None = None,
                 noise_prior: str = "independent", noise_strength: float = 0.5,
                 seed: int = 0, generator: torch.Generator | None = None, keyframe_extras: dict | None = None,
                 window_noise: str = "repeat", progress: bool = False) -> Iterator[WindowChunk]:
    """Generate a long video window by window, yielding each window's new video frames as soon
    as they are final (`WindowChunk`); concatenated they are the whole video.
    """
    run = _Run(pipe, prompt, prompts, num_frames, window, overlap, mode, overlap_space, negative_prompt, image,
               video, height, width, num_inference_steps, guidance_scale, history_guidance, context_noise, sampler,
               noise_prior, noise_strength, seed, generator, keyframe_extras, progress, window_noise)
    if mode == "window":
        yield from _iter_window_mode(run)
    elif mode == "fuse":
        yield from _iter_fuse_mode(run)
    else:
        yield from _iter_keyframe_mode(run)


iter_windows.__doc__ += _LONG_DOC


@torch.no_grad()
def generate_long(pipe, prompt: str | None = None, *, prompts=None, num_frames: int | None = None,
                  window: int | None = None, overlap: int | None = None, mode: str = "window", overlap_space: str = "latent",
                  negative_prompt: str = "", image=None, video=None, height: int | None = None,
                  width: int | None = None, num_inference_steps: int | None = None, guidance_scale=None,
                  history_guidance: float = 1.0, context_noise: float | None = None, sampler: str | None = None,
                  noise_prior: str = "independent", noise_strength: float = 0.5,
                  seed: int = 0, generator: torch.Generator | None = None, keyframe_extras: dict | None = None,
                  window_noise: str = "repeat", return_latents: bool = False, progress: bool = False) -> LongOutput:
    """Generate a whole long video (`LongOutput`).

    In latent overlap space the windows' new latents are assembled into one latent sequence and
    decoded in one call of the VAE (its own chunked decode), independently of `iter_windows`'
    incremental decoding: the two give the same frames (tested). In pixel overlap space the
    streamed chunks are concatenated.
    """
    t0 = time.perf_counter()
    run = _Run(pipe, prompt, prompts, num_frames, window, overlap, mode, overlap_space, negative_prompt, image,
               video, height, width, num_inference_steps, guidance_scale, history_guidance, context_noise, sampler,
               noise_prior, noise_strength, seed, generator, keyframe_extras, progress, window_noise)
    keyframes: list[int] = []
    if mode == "window" and overlap_space == "pixel":
        chunks = list(_iter_window_mode(run))
        frames = np.concatenate([c.frames for c in chunks])
        infos, latents = [c.info for c in chunks], None
    else:
        if mode == "window":
            infos = run.plan(run.total)
            parts = [lat if info.index == 0 else lat[:, :, info.held:]
                     for info, lat in _sliding_latents(run, infos, run.given)]
            latents = torch.cat(parts, dim=2)
        elif mode == "fuse":
            infos = run.plan(run.total)
            latents = _fused_latents(run, infos)
        else:
            keyframes, keys, _ = _keyframe_latents(run)
            infos = _gap_plan(run, keyframes) if len(keyframes) > 1 else [WindowInfo(0, 0, 1, 0, 0, 1, run.schedule[0].prompt)]
            parts = [keys[:, :, :1]]
            for info in infos if len(keyframes) > 1 else []:
                n = info.latent_end - info.latent_start
                lat = run.sample(run.noise(n), info.prompt, keys[:, :, [info.index, info.index + 1]], [0, n - 1])
                parts.append(lat[:, :, 1:])
            latents = torch.cat(parts, dim=2)
        frames = to_uint8(pipe.decode_latents(latents))
    if frames.shape[0] != run.num_frames:
        raise RuntimeError(f"internal: assembled {frames.shape[0]} frames, expected {run.num_frames}")
    return LongOutput(frames=frames, boundaries=[i.first_frame for i in infos[1:]], windows=infos,
                      latents=latents if return_latents else None, seconds=time.perf_counter() - t0,
                      keyframes=keyframes)


generate_long.__doc__ += _LONG_DOC

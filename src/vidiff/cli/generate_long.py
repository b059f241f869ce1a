"""Long-video options of `vidiff generate`: prompt schedules (`--then`), sliding / fused windows,
keyframes + interpolation. `vidiff generate` adds these arguments with `add_long_arguments` and,
when `wants_long` says so (a `--then`, an explicit `--long-mode`, or more frames than the model's
clip length), writes the windows that `run_long` yields to the video file as each one finishes.

    vidiff generate --prompt "a large red circle moves right on a black background" \\
        --then "a large red circle moves down on a black background"
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from vidiff.cli import CLIError

# mirror vidiff.pipelines.long, plus "causal" (vidiff.pipelines.streaming); not imported: keeps
# --help light; a test checks they agree
LONG_MODES = ("window", "fuse", "keyframes", "causal")
WINDOW_NOISES = ("repeat", "fresh")


def add_long_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --then, --window, --overlap, --long-mode, --chunk, --overlap-space, --context-noise,
    --window-noise, --keyframe-fps to `parser`."""
    g = parser.add_argument_group(
        "long videos", "used automatically when --frames exceeds the model's clip length, or with --then / --long-mode")
    g.add_argument("--then", action="append", default=[], metavar="PROMPT",
                   help="the next prompt of a prompt schedule (repeatable); the frames are split evenly between "
                        "the prompt and each --then (without --frames: 16 new frames each for 17-frame clips), "
                        "and the subject carries over")
    g.add_argument("--window", type=int, metavar="N",
                   help="latent frames per model call (default: the model's clip length, e.g. 5 = 17 frames)")
    g.add_argument("--overlap", type=int, default=None, metavar="N",
                   help="latent frames shared by consecutive windows (default: 1; fuse: half the window)")
    g.add_argument("--long-mode", choices=LONG_MODES, default=None,
                   help="window: sliding windows, overlap held clean (default); fuse: overlapping windows "
                        "denoised together, predictions averaged; keyframes: sparse keyframes, then the gaps; "
                        "causal: --chunk latent frames at a time with cached keys/values of the --window - "
                        "--chunk frames before them (needs a DiT trained with attention='causal')")
    g.add_argument("--chunk", type=int, default=1, metavar="N",
                   help="causal mode: latent frames generated per step of the stream (default: %(default)s)")
    g.add_argument("--overlap-space", choices=("latent", "pixel"), default="latent",
                   help="window mode: carry the overlap as latents (default) or as decoded frames re-encoded")
    g.add_argument("--context-noise", type=float, default=None, metavar="T",
                   help="show each window its generated overlap noised to time T (for models trained with "
                        "diffusion.context_noise); 0 holds it clean; default: in window mode the model's "
                        "scheduler.context_noise (the world model's: 0.1), else 0")
    g.add_argument("--window-noise", choices=WINDOW_NOISES, default="repeat",
                   help="repeat: every window starts from the first window's noise (default; less identity "
                        "drift over many windows, README 'Long videos'); fresh: new noise for each window")
    g.add_argument("--keyframe-fps", type=float, metavar="FPS",
                   help="fps condition for the keyframe pass (for models conditioned on fps)")


def wants_long(args: argparse.Namespace, pipe) -> bool:
    """True when the request needs long generation: a --then, a --long-mode, or --frames above the
    pipeline's clip length."""
    return bool(getattr(args, "then", None)) or getattr(args, "long_mode", None) is not None \
        or (getattr(args, "frames", None) or 0) > pipe.config.num_frames


def long_num_frames(args: argparse.Namespace, pipe) -> int:
    """The number of frames the long video will have: --frames, rounded as the VAE needs; without
    it, one clip's worth of new frames per prompt of the schedule, `1 + (F - 1) (1 + len(then))`
    (17-frame clips, two prompts: 33)."""
    segments = 1 + len(getattr(args, "then", None) or [])
    frames = getattr(args, "frames", None) or 1 + (pipe.config.num_frames - 1) * segments
    return pipe.valid_num_frames(frames)


def run_long(args: argparse.Namespace, pipe, num_frames: int | None = None) -> Iterator:
    """Generate the long video the arguments ask for, window by window: yields
    `vidiff.pipelines.long.WindowChunk`s (`.frames` uint8 [n, H, W, 3], `.start`, `.info`) as
    each window is final, so a caller can write them out at once. `num_frames`: the caller's
    `long_num_frames(args, pipe)`, if it has it (its rounding notice then comes once). Bad values
    raise CLIError (when the iteration starts)."""
    from vidiff.pipelines.long import iter_windows
    from vidiff.video import VideoReadError

    prompt = getattr(args, "prompt", None)
    if not prompt:
        raise CLIError("a prompt is needed for long generation")
    if getattr(args, "window", None) is not None and args.window < 2:
        raise CLIError(f"--window {args.window}: needs at least 2 latent frames")
    request = dict(  # what every long mode takes
        prompts=[prompt, *(getattr(args, "then", None) or [])], num_frames=num_frames or long_num_frames(args, pipe),
        negative_prompt=getattr(args, "negative_prompt", "") or "", image=getattr(args, "image", None),
        height=getattr(args, "height", None), width=getattr(args, "width", None),
        num_inference_steps=getattr(args, "steps", None), guidance_scale=getattr(args, "guidance", None),
        sampler=getattr(args, "sampler", None), seed=getattr(args, "seed", 0))
    if getattr(args, "long_mode", None) == "causal":
        chunks = _causal_chunks(args, pipe, request)
    else:
        extras = {"fps": args.keyframe_fps} if getattr(args, "keyframe_fps", None) else None
        chunks = iter_windows(
            pipe, **request, window=args.window, overlap=args.overlap, mode=args.long_mode or "window",
            overlap_space=getattr(args, "overlap_space", "latent"),
            history_guidance=getattr(args, "history_guidance", 1.0), context_noise=getattr(args, "context_noise", None),
            noise_prior=getattr(args, "noise_prior", "independent"), noise_strength=getattr(args, "noise_strength", 0.5),
            keyframe_extras=extras, window_noise=getattr(args, "window_noise", "repeat"), progress=False)
    try:
        yield from chunks
    except VideoReadError as err:
        raise CLIError(str(err)) from err
    except ValueError as err:
        raise CLIError(f"long generation: {err}") from err


def _causal_chunks(args: argparse.Namespace, pipe, request: dict) -> Iterator:
    """`iter_causal(pipe, **request)` with the cache bounded to `--window - --chunk` latent frames
    (default window: the model's clip length), the attention span the model was trained on."""
    from vidiff.pipelines.streaming import clip_cache_frames, iter_causal

    attention = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "attention", None)
    if attention != "causal":
        raise CLIError(f"--long-mode causal: this model's DiT has attention={attention!r}; causal streaming needs "
                       "one trained with attention='causal'")
    unused = {"--overlap": getattr(args, "overlap", None) is not None,
              "--history-guidance": getattr(args, "history_guidance", 1.0) != 1.0,
              "--context-noise": getattr(args, "context_noise", None) is not None,
              "--overlap-space pixel": getattr(args, "overlap_space", "latent") != "latent",
              "--window-noise fresh": getattr(args, "window_noise", "repeat") != "repeat",
              "--keyframe-fps": getattr(args, "keyframe_fps", None) is not None}
    if any(unused.values()):
        raise CLIError(f"--long-mode causal does not use {', '.join(k for k, v in unused.items() if v)}")
    chunk = getattr(args, "chunk", 1)
    try:
        cache = clip_cache_frames(pipe, chunk, getattr(args, "window", None), getattr(args, "height", None),
                                  getattr(args, "width", None))
    except ValueError as err:
        raise CLIError(f"--chunk: {err}") from None
    return iter_causal(pipe, **request, chunk=chunk, max_cache_frames=cache)

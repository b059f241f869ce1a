"""`vidiff generate`: prompt (+ optional first frame) -> mp4/gif/PNG frames + contact sheet."""

from __future__ import annotations

import argparse
import os

from vidiff.cli import CLIError, write_json_file
from vidiff.cli.generate_long import add_long_arguments, long_num_frames, run_long, wants_long
from vidiff.compat.wan.options import add_wan_arguments

DEFAULT_PROMPT = "a large red circle moves right on a black background"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate a video from a prompt (and optionally a first frame)",
        description="Generate a video and a contact sheet beside it; print the paths and the time taken.\n"
        "Without --model the model shipped with vidiff is used.\n\n"
        "Examples:\n"
        '  vidiff generate "a large red circle moves right on a black background" --out red.mp4\n'
        '  vidiff generate "a small green square bounces on a gray background" --image first.png --out blue.gif\n'
        '  vidiff generate --frames 129 "a small yellow circle bounces on a navy background" --out long.mp4\n'
        '  vidiff generate --prompt "a large red circle moves right on a black background" \\\n'
        '      --then "a large red circle moves down on a black background" --out schedule.mp4',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", nargs="?", default=None, help=f"the caption (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--prompt", dest="prompt_option", metavar="PROMPT", help="the caption (same as the positional one)")
    p.add_argument("--model", help="pipeline folder (vidiff or diffusers Wan 2.1); default: the shipped world model")
    p.add_argument("--image", help="first frame (image-to-video); resized and center-cropped if needed")
    p.add_argument("--negative-prompt", default="", help="negative prompt for classifier-free guidance")
    p.add_argument("--frames", type=int, help="number of frames (rounded to what the VAE can produce)")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--history-guidance", type=float, default=1.0, metavar="H",
                   help="history guidance on the given frames (--image, long-video overlaps): >1 holds them "
                        "harder, <1 looser (e.g. 0.5: less drift in long videos); 1 = off")
    p.add_argument("--sampler", help="euler | heun | unipc | dpmpp_2m | ddim | ddpm")
    p.add_argument("--noise-prior", default="independent", choices=("independent", "mixed", "progressive"))
    p.add_argument("--noise-strength", type=float, default=0.5, help="shared fraction / AR(1) correlation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, help="frame rate of the written video (default: the model's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="outputs/generate/video.mp4",
                   help="output .mp4/.mov/.mkv (H.264), .gif, or a folder (e.g. frames/) for lossless PNG "
                        "frames; the contact sheet goes beside it (default: %(default)s)")
    add_long_arguments(p)
    add_wan_arguments(p)
    p.set_defaults(handler=run)


def shipped_model_dir() -> str:
    """The world model that ships inside the package."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "world-dit")


def load_pipeline(model: str | None, device: str = "cpu", args: argparse.Namespace | None = None):
    """Load a pipeline folder (honouring --dtype/--offload for Wan models), mapping load failures
    to one-line CLI errors."""
    from vidiff.compat.wan.options import load_pipeline_with_options
    from vidiff.modelio import ModelLoadError

    path = model or shipped_model_dir()
    if not os.path.isdir(path):
        raise CLIError(f"{path}: model directory not found" + ("" if model else " (the shipped model is missing)"))
    try:
        return load_pipeline_with_options(path, args if args is not None else argparse.Namespace(device=device))
    except (ModelLoadError, FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from err


def generation_record(args: argparse.Namespace, pipe, writer, *, width: int, height: int, seconds: float,
                      windows: list) -> dict:
    """What `vidiff generate` writes beside a video as `<out>.json`: how to make it again (every
    argument, the model folder, the pipeline's scheduler defaults) and, for a long video, its
    prompt segments, its windows and `boundaries` (the first frame of each window after the first;
    `vidiff eval video --seams` measures the change there)."""
    from dataclasses import asdict, is_dataclass

    import vidiff
    from vidiff.machine import machine_info

    arguments = {k: v for k, v in vars(args).items() if k not in ("handler", "prompt_option")}
    arguments["model"] = os.path.abspath(args.model or shipped_model_dir())
    record = {
        "vidiff": vidiff.__version__, "video": os.path.abspath(writer.path), "frames": writer.frames_written,
        "height": height, "width": width, "fps": args.fps or pipe.config.fps, "seconds": seconds,
        "arguments": arguments,
        "scheduler": asdict(pipe.scheduler) if is_dataclass(getattr(pipe, "scheduler", None)) else None,
        "long": None, "machine": machine_info(args.device),
    }
    if windows:
        from vidiff.pipelines.long import prompt_schedule

        record["long"] = {
            "mode": args.long_mode or "window",
            "prompt_segments": [asdict(s) for s in prompt_schedule([args.prompt, *args.then], writer.frames_written)],
            "windows": [asdict(w) for w in windows],
            "boundaries": [w.first_frame for w in windows[1:]],
        }
    return record


def run(args: argparse.Namespace) -> int:
    import time
    import warnings

    from tqdm.auto import tqdm

    from vidiff.contact_sheet import contact_sheet, sheet_frame_indices
    from vidiff.pipelines import VideoPipeline
    from vidiff.video import VideoReadError, VideoWriteError, VideoWriter, output_format

    try:  # before the model loads
        png_folder = output_format(args.out) == "png"
    except VideoWriteError as err:
        raise CLIError(f"--out {err}") from None
    if args.prompt and args.prompt_option and args.prompt != args.prompt_option:
        raise CLIError("give the prompt once: positionally or with --prompt")
    args.prompt = args.prompt or args.prompt_option or DEFAULT_PROMPT
    start = time.perf_counter()
    pipe = load_pipeline(args.model, args.device, args)
    loaded = time.perf_counter() - start
    sheet_frames: list = []
    windows: list = []  # the long video's WindowInfos, for its record
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with VideoWriter(args.out, fps=args.fps or pipe.config.fps) as writer:
                if wants_long(args, pipe):
                    # Each window goes to the file as soon as it is final: memory stays flat however
                    # long the video. The sheet keeps copies of the frames it shows (a view would
                    # keep its whole window alive).
                    total = long_num_frames(args, pipe)
                    shown = set(sheet_frame_indices(total))
                    with tqdm(total=total, unit="frame", desc="long video", leave=False, disable=None) as bar:
                        for chunk in run_long(args, pipe, total):
                            writer.write(chunk.frames)
                            windows.append(chunk.info)
                            sheet_frames += [(chunk.start + i, f.copy()) for i, f in enumerate(chunk.frames)
                                             if chunk.start + i in shown]
                            bar.update(len(chunk.frames))
                else:
                    extra = {}
                    if args.history_guidance != 1.0:
                        if not isinstance(pipe, VideoPipeline):
                            raise CLIError(f"--history-guidance: not supported by {type(pipe).__name__}")
                        extra["history_guidance"] = args.history_guidance
                    out = pipe(args.prompt, negative_prompt=args.negative_prompt, image=args.image,
                               num_frames=args.frames, height=args.height, width=args.width,
                               num_inference_steps=args.steps, guidance_scale=args.guidance, sampler=args.sampler,
                               noise_prior=args.noise_prior, noise_strength=args.noise_strength, seed=args.seed,
                               **extra)
                    writer.write(out.frames)
                    sheet_frames = [(i, out.frames[i]) for i in sheet_frame_indices(len(out.frames))]
        except (VideoReadError, VideoWriteError, ValueError) as err:
            raise CLIError(str(err)) from err
    seconds = time.perf_counter() - start
    for w in caught:
        print(f"vidiff: notice: {w.message}")
    sheet = (writer.path if png_folder else os.path.splitext(writer.path)[0]) + "_sheet.png"  # beside a folder
    labelled = writer.frames_written > len(sheet_frames)
    contact_sheet([f for _, f in sheet_frames], sheet, labels=[f"frame {i}" for i, _ in sheet_frames] if labelled else None)
    height, width = sheet_frames[0][1].shape[:2]
    record = writer.path + ".json"
    write_json_file(record, generation_record(args, pipe, writer, width=width, height=height, seconds=seconds,
                                              windows=windows), "the generation record")
    print(f"video: {writer.path}" + ("/ (PNG frames)" if png_folder else ""))
    print(f"contact sheet: {sheet}" + (f" (one frame in {sheet_frames[1][0]})" if labelled else ""))
    print(f"record: {record} (the arguments, the model and, for a long video, its windows)")
    print(f"{writer.frames_written} frames {width}x{height} in {seconds:.2f} s (generation and writing "
          f"{seconds - loaded:.2f} s)")
    return 0

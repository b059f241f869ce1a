"""`vidiff eval video`: temporal metrics of any video file (no ground truth needed)."""

from __future__ import annotations

import argparse
import os
import sys

from vidiff.cli import CLIError, write_json_file

_COLUMNS = (
    ("warping_error", "warp err", "{:.6f}"),
    ("temporal_flicker", "flicker", "{:.4f}"),
    ("motion_smoothness", "smooth", "{:.4f}"),
    ("dynamic_degree", "dynamic", "{:.0f}"),
    ("frame_consistency", "PSNR dB", "{:.2f}"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "video",
        help="temporal metrics of any video: warping error, flicker, smoothness, dynamics",
        description="Measure temporal coherence of video files with optical flow (OpenCV DIS):\n"
        "warping error (Lai et al. 2018, lower is better), VBench temporal flicker and motion\n"
        "smoothness (higher is better), dynamic degree (1 = moving) and mean frame-to-frame PSNR.\n"
        "With --seams (or --boundaries), also the seams of a long video made in windows: the mean and\n"
        "largest frame-to-frame change at the window boundaries over the median change elsewhere\n"
        "(1 = no visible seam), and the change at a boundary in grey levels (seam dI: mean |dI|,\n"
        "0-255; a ratio over a nearly still video can be large while the step stays invisible).\n\n"
        "Examples:\n"
        "  vidiff eval video a.mp4 b.mp4 --json metrics.json\n"
        "  vidiff eval video long.mp4 --seams          (boundaries from long.mp4.json, by vidiff generate)\n"
        "  vidiff eval video other.mp4 --boundaries 17,33,49",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="video files (mp4, gif, webm, ...)")
    p.add_argument("--json", metavar="OUT", default=None, help="also write the results to this JSON file")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames of each video")
    p.add_argument("--fps", type=float, default=None, help="resample every video to this frame rate first")
    p.add_argument(
        "--flow-preset", choices=("ultrafast", "fast", "medium"), default="medium",
        help="OpenCV DIS preset for the optical flow (default: medium)",
    )
    seams = p.add_mutually_exclusive_group()
    seams.add_argument("--seams", action="store_true",
                       help="also measure seams at the window boundaries in the record `vidiff generate` wrote "
                            "beside each video (<video>.json)")
    seams.add_argument("--boundaries", type=_frame_list, metavar="B1,B2,...",
                       help="also measure seams at these frames (each the first frame of a new window)")
    p.set_defaults(handler=run)


def _frame_list(text: str) -> list[int]:
    try:
        frames = [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected frame numbers separated by commas, e.g. 17,33") from None
    if any(b < 1 for b in frames):
        raise argparse.ArgumentTypeError(f"{text!r}: boundaries are frames >= 1 (a new window's first frame)")
    return frames


def recorded_boundaries(video: str) -> list[int]:
    """The window boundaries of a long video from the record `vidiff generate` wrote beside it."""
    from vidiff.modelio import ModelLoadError, read_json

    path = video + ".json"
    if not os.path.isfile(path):
        raise CLIError(f"{path}: no generation record beside {video} (vidiff generate writes one); "
                       "give the window boundaries with --boundaries")
    try:
        long = read_json(path).get("long")
    except (ModelLoadError, AttributeError) as err:
        raise CLIError(f"{path}: not a generation record ({err})") from None
    if not long or not long.get("boundaries"):
        raise CLIError(f"{path}: {video} was generated in one window, so it has no window boundaries")
    return [int(b) for b in long["boundaries"]]


_SEAM_COLUMNS = (("seams.ratio", "seams", "{:.2f}"), ("seams.max_ratio", "seam max", "{:.2f}"),
                 ("seams.boundary_change", "seam dI", "{:.2f}"))


def _cell(result: dict, key: str, fmt: str) -> str:
    value = result
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "-" if value is None else fmt.format(value)


def _seams(path: str, frames, boundaries: list[int], max_frames: int | None) -> dict:
    """Seam ratios (`vidiff.metrics.seams.boundary_change_ratio`) at the boundaries inside the
    frames read; with --max-frames the later ones are left out, otherwise they are an error."""
    from vidiff.metrics.seams import boundary_change_ratio

    inside = [b for b in boundaries if b < len(frames)]
    if max_frames is None and len(inside) < len(boundaries):
        raise CLIError(f"{path}: has {len(frames)} frames, but the window boundaries reach frame {max(boundaries)}")
    seams = boundary_change_ratio(frames, inside) if inside else {"ratio": None, "max_ratio": None}
    changes = seams.get("boundary_changes")
    return {"boundaries": inside, **seams, "boundary_change": sum(changes) / len(changes) if changes else None}


def run(args: argparse.Namespace) -> int:
    from vidiff.metrics.temporal import evaluate_video
    from vidiff.video import VideoReadError, probe_video, read_video

    if args.max_frames is not None and args.max_frames < 3:
        raise CLIError(f"--max-frames {args.max_frames}: the metrics need at least 3 frames")
    if args.fps is not None and not args.fps > 0:
        raise CLIError(f"--fps {args.fps}: must be positive")
    if args.fps is not None and (args.seams or args.boundaries):
        raise CLIError("--fps resamples the frames, so window boundaries no longer apply; measure seams without it")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise CLIError(f"--json {args.json}: directory {os.path.dirname(os.path.abspath(args.json))} does not exist")
    # Check every input before the slow part, so a typo in the last path fails at once.
    for path in args.paths:
        try:
            probe_video(path)
        except VideoReadError as err:
            raise CLIError(str(err)) from None

    boundaries = {path: recorded_boundaries(path) if args.seams else args.boundaries for path in args.paths}
    results = []
    for path in args.paths:
        try:
            frames = read_video(path, fps=args.fps, max_frames=args.max_frames)
        except VideoReadError as err:
            raise CLIError(str(err)) from None
        if frames.shape[0] < 3:
            raise CLIError(f"{path}: has {frames.shape[0]} frames; the metrics need at least 3")
        seams = {"seams": _seams(path, frames, boundaries[path], args.max_frames)} if boundaries[path] else {}
        try:
            metrics = evaluate_video(frames, preset=args.flow_preset)
        except ValueError as err:  # e.g. frames too small for optical flow
            raise CLIError(f"{path}: {err}") from None
        results.append({"path": path, **metrics, **seams})

    columns = _COLUMNS + (_SEAM_COLUMNS if any(boundaries.values()) else ())
    width = max(len(r["path"]) for r in results)
    header = f"{'video':<{width}}  " + "  ".join(f"{title:>9}" for _, title, _ in columns)
    print(header)
    for r in results:
        cells = "  ".join(f"{_cell(r, key, fmt):>9}" for key, _, fmt in columns)
        print(f"{r['path']:<{width}}  {cells}")
    if args.json:
        write_json_file(args.json, {"videos": results}, "the results")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0

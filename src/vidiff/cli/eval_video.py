"""`vidiff eval video`: temporal metrics of any video file (no ground truth needed)."""

from __future__ import annotations

import argparse
import os
import sys

from vidiff.cli import CLIError

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
        "smoothness (higher is better), dynamic degree (1 = moving) and mean frame-to-frame PSNR.\n\n"
        "Example: vidiff eval video a.mp4 b.mp4 --json metrics.json",
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
    p.set_defaults(handler=run)


def _write_json_atomic(path: str, payload: dict) -> None:
    from vidiff.modelio import write_json  # imports torch: not at module top

    try:
        write_json(path, payload)
    except OSError as err:
        raise CLIError(f"--json {path}: cannot write ({err})") from err


def run(args: argparse.Namespace) -> int:
    from vidiff.metrics.temporal import evaluate_video
    from vidiff.video import VideoReadError, probe_video, read_video

    if args.max_frames is not None and args.max_frames < 3:
        raise CLIError(f"--max-frames {args.max_frames}: the metrics need at least 3 frames")
    if args.fps is not None and not args.fps > 0:
        raise CLIError(f"--fps {args.fps}: must be positive")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise CLIError(f"--json {args.json}: directory {os.path.dirname(os.path.abspath(args.json))} does not exist")
    # Check every input before the slow part, so a typo in the last path fails at once.
    for path in args.paths:
        try:
            probe_video(path)
        except VideoReadError as err:
            raise CLIError(str(err)) from None

    results = []
    for path in args.paths:
        try:
            frames = read_video(path, fps=args.fps, max_frames=args.max_frames)
        except VideoReadError as err:
            raise CLIError(str(err)) from None
        if frames.shape[0] < 3:
            raise CLIError(f"{path}: has {frames.shape[0]} frames; the metrics need at least 3")
        try:
            metrics = evaluate_video(frames, preset=args.flow_preset)
        except ValueError as err:  # e.g. frames too small for optical flow
            raise CLIError(f"{path}: {err}") from None
        results.append({"path": path, **metrics})

    width = max(len(r["path"]) for r in results)
    header = f"{'video':<{width}}  " + "  ".join(f"{title:>9}" for _, title, _ in _COLUMNS)
    print(header)
    for r in results:
        cells = "  ".join(f"{fmt.format(r[key]):>9}" for key, _, fmt in _COLUMNS)
        print(f"{r['path']:<{width}}  {cells}")
    if args.json:
        _write_json_atomic(args.json, {"videos": results})
        print(f"wrote {args.json}", file=sys.stderr)
    return 0

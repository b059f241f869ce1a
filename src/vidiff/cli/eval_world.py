"""`vidiff eval world`: ground-truth checks of shapes-world videos against their captions."""

from __future__ import annotations

import argparse
import json
import math
import os

from vidiff.cli import CLIError

_SUMMARY = (
    ("color_acc", "colour", "{:.3f}"), ("shape_acc", "shape", "{:.3f}"), ("size_acc", "size", "{:.3f}"),
    ("motion_acc", "motion", "{:.3f}"), ("all_correct", "all", "{:.3f}"),
    ("persistence", "persist", "{:.3f}"), ("identity_drift", "drift", "{:.4f}"),
    ("jitter", "jitter", "{:.4f}"), ("background_flicker", "flicker", "{:.4f}"),
    ("background_match", "bg match", "{:.3f}"),
    ("first_frame_psnr", "PSNR1 dB", "{:.2f}"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "world",
        help="shapes-world checks: colour/shape/size/motion accuracy, persistence, jitter, flicker",
        description="Judge shapes-world videos against their captions with a weight-free tracker.\n"
        "Reads DIR/captions.jsonl (one JSON object per line: video, caption, optional image;\n"
        "paths relative to DIR; a video is a file or a folder of PNG frames).\n\n"
        "Example: vidiff eval world --videos outputs/world --json report.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--videos", required=True, metavar="DIR", help="folder with captions.jsonl and the videos")
    p.add_argument("--json", metavar="OUT", default=None, help="write the report here (default: DIR/world_report.json)")
    p.set_defaults(handler=run)


def _read_entries(directory: str) -> list[dict]:
    path = os.path.join(directory, "captions.jsonl")
    if not os.path.isdir(directory):
        raise CLIError(f"{directory}: no such directory")
    if not os.path.isfile(path):
        raise CLIError(f"{path}: not found (expected one JSON object per line with video and caption)")
    entries = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise CLIError(f"{path}:{number}: invalid JSON ({err.msg})") from err
            if not isinstance(entry, dict) or not isinstance(entry.get("video"), str) or not isinstance(entry.get("caption"), str):
                raise CLIError(f"{path}:{number}: needs string fields 'video' and 'caption'")
            entry["_line"] = f"{path}:{number}"
            entries.append(entry)
    if not entries:
        raise CLIError(f"{path}: no entries")
    return entries


def _load_frames(path: str):
    from vidiff.video import VideoReadError, read_frames_png, read_video

    if not os.path.exists(path):
        raise CLIError(f"{path}: video not found")
    try:
        return read_frames_png(path) if os.path.isdir(path) else read_video(path)
    except VideoReadError as err:
        raise CLIError(str(err)) from err


def _load_image(path: str):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise CLIError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise CLIError(f"{path}: not a readable image ({err})") from err


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):
        return _json_safe(value.item())
    return value


def run(args: argparse.Namespace) -> int:
    from vidiff.metrics.world import aggregate, evaluate_video
    from vidiff.world.grammar import WorldGrammarError

    rows = []
    for entry in _read_entries(args.videos):
        frames = _load_frames(os.path.join(args.videos, entry["video"]))
        image = _load_image(os.path.join(args.videos, entry["image"])) if entry.get("image") else None
        try:
            rows.append(evaluate_video(frames, entry["caption"], image=image, video=entry["video"]))
        except WorldGrammarError as err:
            raise CLIError(f"{entry['_line']}: {err}") from err
        except ValueError as err:
            raise CLIError(f"{entry['_line']} ({entry['video']}): {err}") from err
    report = _json_safe({"aggregate": aggregate(rows), "videos": rows})
    out = args.json or os.path.join(args.videos, "world_report.json")
    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, out)
    except OSError as err:
        raise CLIError(f"{out}: cannot write the report ({err})") from err
    agg = report["aggregate"]
    cols = [(k, label, fmt) for k, label, fmt in _SUMMARY if agg.get(k) is not None]
    print(f"shapes-world checks of {agg['count']} videos in {args.videos}")
    print("  ".join(f"{label:>8}" for _, label, _ in cols))
    print("  ".join(f"{fmt.format(agg[k]):>8}" for k, _, fmt in cols))
    print(f"report: {out}")
    return 0

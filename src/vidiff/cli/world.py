"""`vidiff world sample`: render captioned shapes-world clips with their ground truth."""

from __future__ import annotations

import argparse
import json
import os

from vidiff.cli import CLIError

_SUFFIX = {"mp4": ".mp4", "gif": ".gif", "png": ""}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "world",
        help="the procedural shapes world: render captioned clips with exact ground truth",
        description="The shapes world: captioned clips of moving shapes with exact ground truth.\n\n"
        "Example: vidiff world sample --n 16 --out outputs/world --split heldout",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = p.add_subparsers(dest="world_command", metavar="WHAT")
    s = group.add_parser(
        "sample",
        help="write N clips, captions.jsonl and per-clip ground truth (JSON)",
        description="Render N shapes-world clips into OUT: one video per clip (00000.mp4, ... or a\n"
        "folder of PNG frames), OUT/captions.jsonl (video, caption, seed, ground_truth) and one\n"
        "ground-truth JSON per clip (tracks in pixels: centroid, area, angle, visibility).\n"
        "Clip i uses the scene seed of sample i of WorldDataset(seed=SEED).\n\n"
        "Example: vidiff world sample --n 8 --out outputs/world --format png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--n", type=int, required=True, help="number of clips")
    s.add_argument("--out", required=True, help="output folder (created)")
    s.add_argument("--split", choices=("train", "heldout", "any"), default="train", help="default: train")
    s.add_argument("--frames", type=int, default=17, help="frames per clip (default: 17)")
    s.add_argument("--size", type=int, default=64, help="frame side in pixels (default: 64)")
    s.add_argument("--fps", type=float, default=8.0, help="frame rate (default: 8)")
    s.add_argument("--seed", type=int, default=0, help="stream seed (default: 0)")
    s.add_argument("--format", choices=tuple(_SUFFIX), default="mp4", help="video format (default: mp4)")
    s.set_defaults(handler=run_sample)
    p.set_defaults(handler=lambda args: p.print_help() or 0)


def _atomic_write_text(path: str, text: str) -> None:
    from vidiff.modelio import atomic_write  # imports torch: not at module top

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def run_sample(args: argparse.Namespace) -> int:
    from vidiff.video import VideoWriteError, write_video
    from vidiff.world.dataset import scene_seed
    from vidiff.world.render import render
    from vidiff.world.scene import caption, sample_scene

    if args.n < 1:
        raise CLIError(f"--n must be at least 1, got {args.n}")
    if args.frames < 2 or args.size < 8 or not args.fps > 0:
        raise CLIError(f"need --frames >= 2, --size >= 8 and --fps > 0; got {args.frames}, {args.size}, {args.fps}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CLIError(f"{args.out}: exists and is not a directory")
    os.makedirs(args.out, exist_ok=True)
    lines = []
    for i in range(args.n):
        seed = scene_seed(args.seed, i)
        scene = sample_scene(seed, split=args.split, frames=args.frames, fps=args.fps)
        frames, truth = render(scene, size=args.size)
        name = f"{i:05d}{_SUFFIX[args.format]}"
        try:
            write_video(os.path.join(args.out, name), frames, fps=args.fps)
        except VideoWriteError as err:
            raise CLIError(str(err)) from err
        gt_name = f"{i:05d}.json"
        record = {"video": name, "caption": caption(scene), "seed": seed, "split": args.split, **truth.to_json()}
        _atomic_write_text(os.path.join(args.out, gt_name), json.dumps(record))
        lines.append(json.dumps({"video": name, "caption": record["caption"], "seed": seed, "ground_truth": gt_name}))
    _atomic_write_text(os.path.join(args.out, "captions.jsonl"), "\n".join(lines) + "\n")
    print(f"wrote {args.n} clips ({args.frames}x{args.size}x{args.size}, {args.format}) and captions.jsonl to {args.out}")
    return 0

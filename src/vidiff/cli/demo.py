"""`vidiff demo`: the main job of `make demo`."""

from __future__ import annotations

import argparse
import os

from vidiff.cli.generate import DEFAULT_PROMPT as DEMO_PROMPT

# a prompt schedule of one clip per prompt: the circle goes round a square (65 frames)
DEMO_SCHEDULE = tuple(f"a large red circle moves {way} on a black background" for way in ("right", "down", "left", "up"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate a sample video with the shipped model (or render the shapes world)",
        description="Generate a sample video and a contact sheet with the model shipped in the package and\n"
        "print where they are, then a long video from a prompt schedule (the circle moves right,\n"
        "down, left, up: schedule.mp4). Without a shipped model, render the prompt with the\n"
        "shapes-world renderer (the ground truth the model is trained to reproduce).\n\n"
        "Example: vidiff demo --out outputs/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="outputs/demo", help="output folder (default: %(default)s)")
    p.add_argument("--prompt", default=DEMO_PROMPT, help="caption in the shapes-world grammar")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vidiff.cli import generate, main

    os.makedirs(args.out, exist_ok=True)
    if os.path.isdir(generate.shipped_model_dir()):
        code = main(["generate", args.prompt, "--seed", str(args.seed), "--out", os.path.join(args.out, "video.mp4")])
        if code:
            return code
        then = [arg for prompt in DEMO_SCHEDULE[1:] for arg in ("--then", prompt)]
        return main(["generate", "--prompt", DEMO_SCHEDULE[0], *then, "--seed", str(args.seed),
                     "--out", os.path.join(args.out, "schedule.mp4")])
    return _render_ground_truth(args)


def _render_ground_truth(args: argparse.Namespace) -> int:
    from vidiff.contact_sheet import contact_sheet
    from vidiff.video import write_video
    from vidiff.world import render, scene_from_caption

    scene = scene_from_caption(args.prompt, seed=args.seed)
    frames, _ = render(scene)
    video = os.path.join(args.out, "world.mp4")
    sheet = os.path.join(args.out, "world_sheet.png")
    write_video(video, frames, fps=scene.fps)
    contact_sheet(frames, sheet)
    print("no trained model is shipped yet: rendered the prompt with the shapes-world renderer")
    print(f"prompt: {args.prompt}")
    print(f"video: {video}")
    print(f"contact sheet: {sheet}")
    return 0

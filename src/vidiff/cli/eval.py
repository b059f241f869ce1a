"""`vidiff eval ...`: the evaluation group (world ground-truth checks, metrics for any video)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from vidiff.cli import eval_video, eval_world

    p = sub.add_parser(
        "eval",
        help="measure videos: shapes-world ground truth or temporal metrics of any video",
        description="Evaluate videos.\n\nExamples:\n"
        "  vidiff eval world --videos outputs/world --json report.json\n"
        "  vidiff eval video clip.mp4 --json metrics.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = p.add_subparsers(dest="eval_command", metavar="WHAT")
    for module in (eval_world, eval_video):
        module.register(group)
    p.set_defaults(handler=lambda args: p.print_help() or 0)

"""`vidiff demo`: the main job of `make demo`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate a sample video with the shipped model (or render the shapes world)",
        description="Generate a sample video and a contact sheet, and print where they are.\n\n"
        "Example: vidiff demo --out outputs/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError  # filled in once the world renderer lands

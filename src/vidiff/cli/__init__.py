"""The `vidiff` command.

Each subcommand lives in its own module of this package with a `register(subparsers)` function;
the list below is explicit on purpose (no plugin registry). Command modules import heavy libraries
(torch, av, cv2) inside their handlers so that `vidiff --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys

from vidiff import __version__


class CLIError(Exception):
    """A user-facing error: printed as one line `vidiff: error: ...`, exit status 2."""


def write_json_file(path: str, payload: dict, what: str) -> None:
    """Write `payload` as JSON atomically (`vidiff.modelio.write_json`); a failure is a CLIError
    naming the file and `what` it is, e.g. "the report"."""
    from vidiff.modelio import write_json  # imports torch: not at module top

    try:
        write_json(path, payload)
    except OSError as err:
        raise CLIError(f"{path}: cannot write {what} ({err})") from err


def build_parser() -> argparse.ArgumentParser:
    from vidiff.cli import demo, eval, generate, train, world

    parser = argparse.ArgumentParser(
        prog="vidiff",
        description="vidiff: latent video diffusion — train, run and measure video models.",
        epilog="Example: vidiff demo --out outputs/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vidiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (demo, generate, train, world, eval):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except CLIError as err:
        print(f"vidiff: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidiff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared by the probes of a world model (caption_sensitivity.py, direction_probe.py,
steer_probe.py, size_probe.py, spin_probe.py): the argument parser, loading the pipeline, writing the JSON report."""

from __future__ import annotations

import argparse
import os
import sys

from vidiff.machine import machine_info
from vidiff.modelio import write_json


def probe_parser(doc: str, script: str, example: str) -> argparse.ArgumentParser:
    """The probes' argument parser: `--model` and `--json` (default
    `benchmarks/results/<script name>.json`); the first paragraph of `doc` is the description."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     epilog=f"example: python benchmarks/{script} {example}")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped world model)")
    parser.add_argument("--json", default=f"benchmarks/results/{script.removesuffix('.py')}.json", help="report path")
    return parser


def load_pipeline(model: str | None):
    """`(folder, VideoPipeline)` for `model`, default the shipped world model; a missing folder
    is named on stderr and exits with status 2."""
    from vidiff.cli.generate import shipped_model_dir
    from vidiff.pipelines import VideoPipeline

    model = model or shipped_model_dir()
    if not os.path.isdir(model):
        print(f"error: model folder {model} not found", file=sys.stderr)
        raise SystemExit(2)
    return model, VideoPipeline.from_pretrained(model)


def write_report(path: str, report: dict, script: str, argv: list[str] | None) -> None:
    """`report` with the machine and the command that made it, written atomically to `path`."""
    args = argv if argv is not None else sys.argv[1:]
    full = {"machine": machine_info("cpu"), **report, "command": f"python benchmarks/{script} " + " ".join(args)}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_json(path, full)

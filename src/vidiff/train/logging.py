"""The training log: one JSON object per line, and a loss-curve PNG drawn from it."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

__all__ = ["JsonlLog", "read_jsonl", "plot_loss_curve"]


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL log; a torn last line (crash mid-write) is ignored."""
    records = []
    path = Path(path)
    if not path.exists():
        return records
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


class JsonlLog:
    """Append-only JSONL log, flushed per record so a crash loses at most the line being written.

    `truncate_after(step)` drops records of steps beyond a resumed checkpoint, so that after a
    resume the log holds each step exactly once.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as fh:
            for r in kept:
                fh.write(json.dumps(r) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(clean) + "\n")
            fh.flush()


def plot_loss_curve(log_path: str | Path, png_path: str | Path, *, key: str = "loss", smooth: int = 0) -> Path | None:
    """Draw `key` against `step` from a JSONL log into a PNG (matplotlib imported only here).

    smooth > 0 overlays a trailing moving average over that many steps. Returns the PNG path, or
    None when the log has no such values yet.
    """
    records = [r for r in read_jsonl(log_path) if isinstance(r.get(key), (int, float)) and "step" in r]
    if not records:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no loss-curve PNG (the JSONL log has the numbers)", stacklevel=2)
        return None

    steps = [r["step"] for r in records]
    values = [r[key] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, values, lw=0.8, alpha=0.6 if smooth else 1.0, label=key)
    if smooth > 1 and len(values) > smooth:
        window, avg = [], []
        for v in values:
            window.append(v)
            if len(window) > smooth:
                window.pop(0)
            avg.append(sum(window) / len(window))
        ax.plot(steps, avg, lw=1.5, label=f"{key} (mean of {smooth})")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    if min(values) > 0 and max(values) / min(values) > 100:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(png_path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path

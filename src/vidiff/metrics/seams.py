"""Seams of long videos made in windows: is the change between frames larger where one window
hands over to the next than elsewhere?"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def frame_changes(frames) -> np.ndarray:
    """Mean absolute change between consecutive frames, `[F - 1]`:
    `d_k = mean |frames[k + 1] - frames[k]|` (uint8 values, so in 0..255; float input as given)."""
    arr = np.asarray(frames)
    if arr.ndim < 2 or arr.shape[0] < 2:
        raise ValueError(f"need at least 2 frames [F, ...], got shape {arr.shape}")
    x = arr.astype(np.float64)
    return np.abs(np.diff(x, axis=0)).reshape(arr.shape[0] - 1, -1).mean(axis=1)


def boundary_change_ratio(frames, boundaries: Sequence[int]) -> dict:
    """Frame-to-frame change at window boundaries relative to the typical change elsewhere.

    `boundaries`: the first frame of each window after the first (`LongOutput.boundaries`); the
    boundary change of b is `d_{b-1} = mean |frames[b] - frames[b - 1]|`. With `d` from
    `frame_changes`:

        ratio     = mean_b d_{b-1} / median_{k not a boundary} d_k
        max_ratio = max_b  d_{b-1} / median_{k not a boundary} d_k

    Returns {"ratio", "max_ratio", "boundary_changes", "median_change"}; the ratios are inf
    when the video is otherwise still (median 0) but changes at a boundary, 1.0 when both are 0,
    and None when there is no boundary or no other pair of frames.
    """
    d = frame_changes(frames)
    idx = sorted({int(b) - 1 for b in boundaries})
    if any(not 0 <= i < len(d) for i in idx):
        raise ValueError(f"boundaries {list(boundaries)} must lie in [1, {len(d)}] for {len(d) + 1} frames")
    rest = np.delete(d, idx)
    at = d[idx]
    out = {"ratio": None, "max_ratio": None, "boundary_changes": at.tolist(),
           "median_change": float(np.median(rest)) if len(rest) else None}
    if not idx or not len(rest):
        return out
    med = float(np.median(rest))

    def ratio(v: float) -> float:
        if med > 0:
            return float(v / med)
        return 1.0 if v == 0 else float("inf")

    out["ratio"] = ratio(float(at.mean()))
    out["max_ratio"] = ratio(float(at.max()))
    return out

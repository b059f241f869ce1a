"""Caption-weighted sampling: draw clips whose caption names a rare behaviour more often.

A motion the model barely learns (in the shapes world: "spins") can be shown more often without
rendering new data: each clip gets a sampling weight from the phrases its caption contains, and
the loader draws each epoch's order from those weights (`ResumableLoader(weights=...)`).
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import torch

__all__ = ["caption_sampling_weights", "check_phrase_weights", "weighted_shares"]


def _matches(lowered_captions: Sequence[str], phrase: str) -> torch.Tensor:
    """`[N]` bool: which captions contain `phrase` as whole words ("spins" is not in "spinster")."""
    pattern = re.compile(r"(?<!\w)" + re.escape(phrase.strip().lower()) + r"(?!\w)")
    return torch.tensor([bool(pattern.search(c)) for c in lowered_captions], dtype=torch.bool)


def check_phrase_weights(phrase_weights: Mapping[str, float]) -> None:
    """Raise ValueError unless every phrase is non-empty and every weight finite and > 0."""
    for phrase, weight in phrase_weights.items():
        if not phrase.strip():
            raise ValueError("caption weights: a phrase is empty")
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"caption weight of {phrase!r} must be a finite number > 0, got {weight}")


def caption_sampling_weights(captions: Sequence[str], phrase_weights: Mapping[str, float]) -> torch.Tensor:
    """Per-clip sampling weights `w_i = prod_{p in P, p in caption_i} w_p` (float64, `[N]`).

    `phrase_weights` maps a phrase (matched case-insensitively, as whole words) to a factor; a
    caption that names no phrase keeps weight 1, one that names two multiplies both. A phrase that
    no caption contains is an error: it is almost always a typo, and would silently do nothing.

    Example: `caption_sampling_weights(["a red circle spins", "a red circle bounces"], {"spins": 4})`
    is `[4., 1.]`, so the spinning clip is drawn 4 / 5 of the time.
    """
    check_phrase_weights(phrase_weights)
    weights = torch.ones(len(captions), dtype=torch.float64)
    lowered = [c.lower() for c in captions]
    for phrase, factor in phrase_weights.items():
        hits = _matches(lowered, phrase)
        if not bool(hits.any()):
            raise ValueError(f"caption weight phrase {phrase!r} occurs in none of the {len(captions)} captions")
        weights[hits] *= float(factor)
    return weights


def weighted_shares(captions: Sequence[str], weights: torch.Tensor, phrases: Sequence[str]) -> dict[str, tuple[float, float]]:
    """For each phrase: (share of clips whose caption names it, expected share of draws under `weights`).

    `share_drawn(p) = sum_{i: p in caption_i} w_i / sum_i w_i`; what a run logs so the effect of
    its weights is visible before it trains.
    """
    total = float(weights.sum())
    lowered = [c.lower() for c in captions]
    out = {}
    for phrase in phrases:
        hits = _matches(lowered, phrase)
        out[phrase] = (float(hits.double().mean()), float(weights[hits].sum()) / total)
    return out

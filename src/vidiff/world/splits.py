"""Held-out (color, shape, motion) combinations for measuring compositional generalisation.

``HELDOUT_COMBOS`` is fixed (never regenerated) so that results stay comparable across runs. It
was chosen once by the rule ``(color_index + 3 * shape_index + 7 * motion_index) % 10 == 0`` over
the grammar's orderings (``COLORS``, ``SHAPES``, ``MOTIONS``), skipping ``circle spins``: 29 of the
288 combinations (~10 %), 3-4 per colour, 7-8 per shape and 2-4 per motion, so every colour,
shape and motion still appears in training, only never in these combinations.

``circle spins`` is in no split: a spinning disc looks exactly like a still one, so the sampler
never draws it (the caption still parses; the world metric judges it as "in place").
"""

from __future__ import annotations

from vidiff.world.grammar import COLORS, MOTIONS, SHAPES

HELDOUT_COMBOS: tuple[tuple[str, str, str], ...] = (
    ("red", "circle", "moves left"),
    ("red", "square", "moves right"),
    ("red", "triangle", "moves up"),
    ("red", "diamond", "moves down"),
    ("green", "circle", "grows"),
    ("green", "square", "shrinks"),
    ("green", "diamond", "moves left"),
    ("blue", "circle", "stays still"),
    ("blue", "square", "bounces"),
    ("blue", "triangle", "spins"),
    ("blue", "diamond", "grows"),
    ("yellow", "circle", "moves right"),
    ("yellow", "square", "moves up"),
    ("yellow", "triangle", "moves down"),
    ("yellow", "diamond", "stays still"),
    ("magenta", "circle", "shrinks"),
    ("magenta", "triangle", "moves left"),
    ("magenta", "diamond", "moves right"),
    ("cyan", "circle", "bounces"),
    ("cyan", "square", "spins"),
    ("cyan", "triangle", "grows"),
    ("cyan", "diamond", "shrinks"),
    ("white", "circle", "moves up"),
    ("white", "square", "moves down"),
    ("white", "triangle", "stays still"),
    ("white", "diamond", "bounces"),
    ("orange", "square", "moves left"),
    ("orange", "triangle", "moves right"),
    ("orange", "diamond", "moves up"),
)

#: Combinations no split samples (visually indistinguishable from another caption).
UNSAMPLED_COMBOS: frozenset[tuple[str, str]] = frozenset({("circle", "spins")})

SPLITS = ("train", "heldout", "any")

_HELDOUT = frozenset(HELDOUT_COMBOS)


def is_heldout(color: str, shape: str, motion: str) -> bool:
    """True when (color, shape, motion) is one of ``HELDOUT_COMBOS``."""
    return (color, shape, motion) in _HELDOUT


def combos(split: str) -> tuple[tuple[str, str, str], ...]:
    """Every sampleable (color, shape, motion) of a split, in grammar order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    out = []
    for c in COLORS:
        for s in SHAPES:
            for m in MOTIONS:
                if (s, m) in UNSAMPLED_COMBOS:
                    continue
                held = (c, s, m) in _HELDOUT
                if split == "any" or (split == "heldout") == held:
                    out.append((c, s, m))
    return tuple(out)

"""The caption grammar of the shapes world: vocabulary, palette, captions and the parser.

The grammar (a contract shared with DESIGN.md)::

    a {size} {color} {shape} {motion} [and a {size} {color} {shape} {motion}] on a {background} background
      [, the camera pans left | , the camera pans right]

Objects are listed back to front: the second object is drawn in front of the first.

Background colour conflicts: an object never has "the background's colour". Besides the exact
match that cannot happen (there is no black/navy object), two pairs are treated as the same colour
family and never sampled together: ``blue`` on ``navy`` (same hue, only darker) and ``white`` on
``gray`` or ``checkered`` (achromatic on achromatic; the checkered tiles are greys). Such captions
still parse (the words are in the grammar); :func:`conflicts` says whether a caption breaks the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SIZES: tuple[str, ...] = ("small", "large")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
MOTIONS: tuple[str, ...] = (
    "moves left", "moves right", "moves up", "moves down",
    "stays still", "bounces", "spins", "grows", "shrinks",
)
DIRECTIONAL_MOTIONS: tuple[str, ...] = MOTIONS[:4]
BACKGROUNDS: tuple[str, ...] = ("black", "gray", "navy", "checkered")
PANS: tuple[str | None, ...] = (None, "left", "right")

#: sRGB palette of the object colours (uint8 values).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 50),
    "blue": (40, 90, 255),
    "yellow": (250, 230, 20),
    "magenta": (230, 40, 220),
    "cyan": (20, 220, 230),
    "white": (245, 245, 245),
    "orange": (255, 140, 0),
}

#: The colours a background is made of (checkered: the two tile tones).
BACKGROUND_TONES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "black": ((0, 0, 0),),
    "gray": ((110, 110, 110),),
    "navy": ((10, 20, 100),),
    "checkered": ((45, 45, 45), (90, 90, 90)),
}

#: Object colours never placed on each background (see the module docstring).
BACKGROUND_CONFLICTS: dict[str, tuple[str, ...]] = {
    "black": (),
    "gray": ("white",),
    "navy": ("blue",),
    "checkered": ("white",),
}

_DIRECTION_WORDS = ("left", "right", "up", "down")
VOCABULARY: frozenset[str] = frozenset(
    {"a", "and", "on", "background", "the", "camera", "pans", ",", "moves", "stays", "still",
     "bounces", "spins", "grows", "shrinks", *_DIRECTION_WORDS, *SIZES, *COLORS, *SHAPES, *BACKGROUNDS}
)


class WorldGrammarError(ValueError):
    """A caption outside the shapes-world grammar; ``unknown_words`` lists words not in it."""

    def __init__(self, message: str, unknown_words: tuple[str, ...] = ()):
        super().__init__(message)
        self.unknown_words = tuple(unknown_words)


@dataclass(frozen=True)
class ObjectSpec:
    """What a caption says about one object."""

    size: str
    color: str
    shape: str
    motion: str

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape} {self.motion}"


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption says: objects back to front, the background and the camera pan (or None)."""

    objects: tuple[ObjectSpec, ...]
    background: str
    pan: str | None = None

    def __post_init__(self):
        if not 1 <= len(self.objects) <= 2:
            raise ValueError(f"a caption has 1 or 2 objects, got {len(self.objects)}")
        for obj in self.objects:
            for value, allowed, name in (
                (obj.size, SIZES, "size"), (obj.color, COLORS, "color"),
                (obj.shape, SHAPES, "shape"), (obj.motion, MOTIONS, "motion"),
            ):
                if value not in allowed:
                    raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; expected one of {BACKGROUNDS}")
        if self.pan not in PANS:
            raise ValueError(f"unknown pan {self.pan!r}; expected one of {PANS}")

    def text(self) -> str:
        """The caption sentence (the inverse of :func:`parse_caption`)."""
        body = " and ".join(o.phrase() for o in self.objects)
        out = f"{body} on a {self.background} background"
        if self.pan is not None:
            out += f", the camera pans {self.pan}"
        return out


def conflicts(spec: CaptionSpec) -> list[str]:
    """Colour rules a caption breaks: an object coloured like the background, or two objects
    sharing a colour (objects are told apart by colour). Empty when the caption is valid."""
    problems = [
        f"{o.color} object on a {spec.background} background"
        for o in spec.objects if o.color in BACKGROUND_CONFLICTS[spec.background]
    ]
    if len(spec.objects) == 2 and spec.objects[0].color == spec.objects[1].color:
        problems.append(f"two {spec.objects[0].color} objects")
    return problems


def _tokens(text: str) -> list[str]:
    text = text.strip().lower()
    text = re.sub(r"[.!]+$", "", text).strip()
    return re.sub(r",", " , ", text).split()


def parse_caption(text: str) -> CaptionSpec:
    """Parse a caption of the grammar back into its attributes.

    Case, repeated whitespace and a trailing period are ignored. Raises :class:`WorldGrammarError`
    naming the unknown words, or the position where the sentence leaves the grammar.
    """
    if not isinstance(text, str):
        raise WorldGrammarError(f"caption must be a string, got {type(text).__name__}")
    toks = _tokens(text)
    unknown = tuple(dict.fromkeys(t for t in toks if t not in VOCABULARY))
    if unknown:
        raise WorldGrammarError(
            f"caption {text!r} has words outside the shapes-world grammar: {', '.join(unknown)}",
            unknown,
        )
    pos = 0

    def fail(expected: str):
        got = toks[pos] if pos < len(toks) else "end of caption"
        raise WorldGrammarError(f"caption {text!r}: expected {expected} at word {pos + 1}, got {got!r}")

    def take(allowed) -> str:
        nonlocal pos
        if pos < len(toks) and toks[pos] in allowed:
            pos += 1
            return toks[pos - 1]
        fail(" | ".join(allowed))

    def motion() -> str:
        nonlocal pos
        word = take(("moves", "stays", "bounces", "spins", "grows", "shrinks"))
        if word == "moves":
            return "moves " + take(_DIRECTION_WORDS)
        if word == "stays":
            return "stays " + take(("still",))
        return word

    def obj() -> ObjectSpec:
        take(("a",))
        return ObjectSpec(take(SIZES), take(COLORS), take(SHAPES), motion())

    objects = [obj()]
    if pos < len(toks) and toks[pos] == "and":
        pos += 1
        objects.append(obj())
    take(("on",))
    take(("a",))
    background = take(BACKGROUNDS)
    take(("background",))
    pan = None
    if pos < len(toks):
        take((",",))
        take(("the",))
        take(("camera",))
        take(("pans",))
        pan = take(("left", "right"))
    if pos < len(toks):
        fail("end of caption")
    return CaptionSpec(tuple(objects), background, pan)

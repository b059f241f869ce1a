import itertools

import numpy as np
import pytest

from vidiff.world.grammar import (
    BACKGROUNDS, COLORS, MOTIONS, PANS, SHAPES, SIZES, CaptionSpec, ObjectSpec, WorldGrammarError,
    conflicts, parse_caption,
)

ALL_OBJECTS = [ObjectSpec(*c) for c in itertools.product(SIZES, COLORS, SHAPES, MOTIONS)]


def test_round_trip_every_single_object_caption():
    for obj, bg, pan in itertools.product(ALL_OBJECTS, BACKGROUNDS, PANS):
        spec = CaptionSpec((obj,), bg, pan)
        assert parse_caption(spec.text()) == spec


def test_round_trip_two_object_captions():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        a, b = (ALL_OBJECTS[i] for i in rng.integers(len(ALL_OBJECTS), size=2))
        spec = CaptionSpec((a, b), BACKGROUNDS[rng.integers(4)], PANS[rng.integers(3)])
        assert parse_caption(spec.text()) == spec


def test_caption_text_follows_the_grammar_literally():
    spec = CaptionSpec(
        (ObjectSpec("small", "red", "circle", "moves left"), ObjectSpec("large", "cyan", "diamond", "spins")),
        "checkered", "right",
    )
    assert spec.text() == (
        "a small red circle moves left and a large cyan diamond spins on a checkered background, "
        "the camera pans right"
    )


@pytest.mark.parametrize("text", [
    "A Small RED circle   moves left on a black background.",
    "  a large white square stays still on a navy background ",
    "a small yellow triangle bounces and a large green diamond grows on a gray background, the camera pans left.",
    "a large orange circle shrinks on a checkered background,the camera pans right",
])
def test_hand_written_prompts_parse(text):
    spec = parse_caption(text)
    assert parse_caption(spec.text()) == spec
    assert spec.objects[0].color in text.lower()


def test_hand_written_prompt_attributes():
    spec = parse_caption("A small RED circle   moves left on a black background.")
    assert spec == CaptionSpec((ObjectSpec("small", "red", "circle", "moves left"),), "black", None)


def test_unknown_words_are_named():
    with pytest.raises(WorldGrammarError) as err:
        parse_caption("a small purple circle zooms left on a black background")
    assert err.value.unknown_words == ("purple", "zooms")
    assert "purple" in str(err.value) and "zooms" in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("text", [
    "a small red circle on a black background",  # no motion
    "a red small circle moves left on a black background",  # order
    "a small red circle moves left",  # no background
    "a small red circle moves left on a black background, the camera pans up",
    "a small red circle moves left and on a black background",
    "",
])
def test_structural_errors_have_no_unknown_words(text):
    with pytest.raises(WorldGrammarError) as err:
        parse_caption(text)
    assert err.value.unknown_words == ()


def test_conflicts():
    ok = parse_caption("a small blue circle grows on a black background")
    assert conflicts(ok) == []
    assert conflicts(parse_caption("a small blue circle grows on a navy background"))
    assert conflicts(parse_caption("a small white circle grows on a gray background"))
    assert conflicts(parse_caption("a small red circle grows and a large red square spins on a black background"))


def test_spec_validates_values():
    with pytest.raises(ValueError, match="purple"):
        CaptionSpec((ObjectSpec("small", "purple", "circle", "spins"),), "black")
    with pytest.raises(ValueError, match="plaid"):
        CaptionSpec((ObjectSpec("small", "red", "circle", "spins"),), "plaid")
    with pytest.raises(ValueError, match="1 or 2 objects"):
        CaptionSpec((), "black")

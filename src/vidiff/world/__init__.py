"""The procedural shapes world: captioned scenes, physics, an anti-aliased renderer with exact
ground truth, held-out splits and a streaming dataset.

Quick use::

    from vidiff.world import sample_scene, caption, render
    scene = sample_scene(seed=0)
    frames, truth = render(scene, size=64)   # uint8 [17, 64, 64, 3], per-object tracks
    caption(scene)                           # "a small red circle moves left on a black background"

``WorldDataset`` (torch) is imported lazily so that this package stays light.
"""

from vidiff.world.grammar import (
    BACKGROUNDS, COLORS, MOTIONS, PALETTE, SHAPES, SIZES, CaptionSpec, ObjectSpec, WorldGrammarError,
    parse_caption,
)
from vidiff.world.render import GroundTruth, ObjectTruth, render, render_batch
from vidiff.world.scene import Scene, SceneObject, caption, sample_scene, scene_from_caption
from vidiff.world.splits import HELDOUT_COMBOS, is_heldout

__all__ = [
    "BACKGROUNDS", "COLORS", "MOTIONS", "PALETTE", "SHAPES", "SIZES", "CaptionSpec", "ObjectSpec",
    "WorldGrammarError", "parse_caption", "GroundTruth", "ObjectTruth", "render", "render_batch",
    "Scene", "SceneObject", "caption", "sample_scene", "scene_from_caption", "HELDOUT_COMBOS", "is_heldout",
    "WorldDataset", "world_batch",
]


def __getattr__(name):
    if name in ("WorldDataset", "world_batch"):
        from vidiff.world import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'vidiff.world' has no attribute {name!r}")

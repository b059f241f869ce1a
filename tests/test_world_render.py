import dataclasses
import math

import numpy as np
import pytest

from vidiff.world.grammar import BACKGROUND_TONES, PALETTE
from vidiff.world.render import background_frames, render, render_batch, shape_coverage
from vidiff.world.scene import (
    CHECKER_TILE, DIAMOND_ASPECT, _DIAMOND_HALF_HEIGHT, _SQUARE_HALF, _TRIANGLE_CIRCUMRADIUS, sample_scene,
)


def _vertices(shape, cx, cy, r, angle_deg):
    """Independent polygon description: vertices on screen (y down), rotated CCW on screen."""
    if shape == "square":
        a = _SQUARE_HALF * r
        pts = [(a, a), (-a, a), (-a, -a), (a, -a)]
    elif shape == "triangle":
        R = _TRIANGLE_CIRCUMRADIUS * r
        pts = [(R * math.cos(math.radians(d)), R * math.sin(math.radians(d))) for d in (90, 210, 330)]
    else:
        h = _DIAMOND_HALF_HEIGHT * r
        pts = [(h * DIAMOND_ASPECT, 0), (0, h), (-h * DIAMOND_ASPECT, 0), (0, -h)]
    th = math.radians(angle_deg)
    out = []
    for x, y in pts:  # math coordinates (y up), rotate CCW, then flip y for the screen
        xr, yr = x * math.cos(th) - y * math.sin(th), x * math.sin(th) + y * math.cos(th)
        out.append((cx + xr, cy - yr))
    return out


def _supersampled(shape, cx, cy, r, angle, size, k=8):
    """Reference coverage: fraction of k x k sub-pixel samples inside the shape."""
    sub = (np.arange(size * k) + 0.5) / k
    X, Y = np.meshgrid(sub, sub)
    if shape == "circle":
        inside = (X - cx) ** 2 + (Y - cy) ** 2 <= r * r
    else:
        verts = _vertices(shape, cx, cy, r, angle)
        inside = np.ones_like(X, bool)
        n = len(verts)
        # convex polygon: same side of every edge as the centre
        for i in range(n):
            (x1, y1), (x2, y2) = verts[i], verts[(i + 1) % n]
            cross = (x2 - x1) * (Y - y1) - (y2 - y1) * (X - x1)
            centre = (x2 - x1) * (cy - y1) - (y2 - y1) * (cx - x1)
            inside &= np.sign(cross) == np.sign(centre)
    return inside.reshape(size, k, size, k).mean(axis=(1, 3))


@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "diamond"])
def test_coverage_matches_supersampled_geometry(shape):
    rng = np.random.default_rng(1)
    for _ in range(4):
        cx, cy, r, ang = 24 + rng.uniform(-2, 2), 24 + rng.uniform(-2, 2), rng.uniform(5, 12), rng.uniform(0, 360)
        ours = shape_coverage(shape, [[cx]], [[cy]], [[r]], [[ang]], 48)[0, 0]
        ref = _supersampled(shape, cx, cy, r, ang, 48)
        assert abs(ours.sum() - math.pi * r * r) / (math.pi * r * r) < 0.02  # equal-area shapes
        assert abs(ref.sum() - math.pi * r * r) / (math.pi * r * r) < 0.02
        assert np.abs(ours - ref).max() < 0.55  # only boundary pixels differ, by a ramp
        assert np.abs(ours - ref).mean() < 0.01
        inter = ((ours >= 0.5) & (ref >= 0.5)).sum()
        union = ((ours >= 0.5) | (ref >= 0.5)).sum()
        assert inter / union > 0.93


def test_triangle_points_up_and_angle_is_counter_clockwise():
    up = shape_coverage("triangle", [[32.0]], [[32.0]], [[12.0]], [[0.0]], 64)[0, 0] >= 0.5
    rows = np.nonzero(up.any(1))[0]
    assert up[rows[0]].sum() < up[rows[-1]].sum()  # narrow apex at the top
    left = shape_coverage("triangle", [[32.0]], [[32.0]], [[12.0]], [[90.0]], 64)[0, 0] >= 0.5
    cols = np.nonzero(left.any(0))[0]
    assert left[:, cols[0]].sum() < left[:, cols[-1]].sum()  # CCW quarter turn: apex points left


def test_colors_and_background_values():
    scene = sample_scene(3, split="any")
    scene = dataclasses.replace(scene, background="gray", pan=None, pan_speed=0.0,
                                objects=tuple(dataclasses.replace(o, color="red") for o in scene.objects[:1]))
    frames, truth = render(scene)
    o = truth.objects[0]
    core = shape_coverage(o.shape, o.centroid[None, :, 0], o.centroid[None, :, 1],
                          np.sqrt(o.area / math.pi)[None], o.angle[None], 64)[0] == 1.0
    assert np.all(frames[core] == PALETTE["red"])
    far = shape_coverage(o.shape, o.centroid[None, :, 0], o.centroid[None, :, 1],
                         np.sqrt(o.area / math.pi)[None], o.angle[None], 64)[0] == 0.0
    assert np.all(frames[far] == BACKGROUND_TONES["gray"][0])


def test_checker_moves_with_the_pan():
    for seed in range(200):
        scene = sample_scene(seed, split="any")
        if scene.pan is not None:
            break
    scene = dataclasses.replace(scene, background="checkered")
    size = 64
    # choose the time at which the pan has moved the tiles by exactly one tile (8 px)
    t = np.array([0.0, CHECKER_TILE / abs(scene.pan_speed)])
    bg = background_frames(scene, t, size)
    step = int(round(CHECKER_TILE * size)) * int(np.sign(scene.pan_speed))
    assert np.allclose(np.roll(bg[0], step, axis=1)[:, 10:-10], bg[1][:, 10:-10], atol=1e-3)
    assert not np.allclose(bg[0], bg[1])
    assert set(np.unique(bg[0][bg[0] == bg[0]]).round()) >= {45.0, 90.0}


def test_batch_equals_single_renders():
    scenes = [sample_scene(s, split="any") for s in range(12)]
    batch, truths = render_batch(scenes, size=40)
    for scene, frames, truth in zip(scenes, batch, truths):
        single, t1 = render(scene, size=40)
        assert np.array_equal(single, frames)
        for a, b in zip(truth.objects, t1.objects):
            assert np.array_equal(a.mask, b.mask)
    assert batch.dtype == np.uint8 and batch.shape == (12, 17, 40, 40, 3)


def test_batch_rejects_mixed_clip_lengths():
    with pytest.raises(ValueError, match="frames"):
        render_batch([sample_scene(0, frames=17), sample_scene(1, frames=9)])
    video, _ = render_batch([sample_scene(0, frames=17), sample_scene(1, frames=9)], frames=5, fps=4)
    assert video.shape[1] == 5


def test_visibility_is_fraction_of_unhidden_coverage():
    # force an overlap: the front object sits half a radius right of the (still) back one
    scene = sample_scene(0, split="any", num_objects=2)
    a, b = scene.objects
    a = dataclasses.replace(a, vx=0.0, vy=0.0, gravity=0.0, scale_end=1.0, x0=0.5, y0=0.5)
    b = dataclasses.replace(b, x0=0.5 + 0.6 * a.radius, y0=0.5, vx=0.0, vy=0.0, gravity=0.0,
                            scale_end=1.0, spin=0.0)
    scene = dataclasses.replace(scene, objects=(a, b), pan=None, pan_speed=0.0)
    _, truth = render(scene, size=64)
    back, front = truth.objects
    cov_b = shape_coverage(a.shape, back.centroid[None, :, 0], back.centroid[None, :, 1],
                           np.sqrt(back.area / math.pi)[None], back.angle[None], 64)[0]
    cov_f = shape_coverage(b.shape, front.centroid[None, :, 0], front.centroid[None, :, 1],
                           np.sqrt(front.area / math.pi)[None], front.angle[None], 64)[0]
    expected = (cov_b * (1 - cov_f)).sum((1, 2)) / cov_b.sum((1, 2))
    assert np.allclose(back.visibility, expected, atol=1e-5)
    assert np.all(back.visibility < 0.99)
    assert np.allclose(front.visibility, 1.0)

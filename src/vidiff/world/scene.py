"""Scenes of the shapes world: sampling from a seed and the physics of each motion.

Coordinates are normalised and resolution-free: ``x`` and ``y`` are fractions of the (square)
frame side, origin at the top-left corner, ``y`` pointing down; sizes are fractions of the frame
side too; angles are degrees counter-clockwise as seen on screen; time is in seconds. Rendering
the same scene at 32x32 or 128x128 therefore shows the same motion.

Physics (``t`` in seconds, ``D`` the duration the scene was sampled for):

* moves left/right/up/down: constant velocity, ``p(t) = p0 + v t``.
* bounces: dropped from rest under gravity ``g`` onto a floor at ``y_floor`` (the object's lowest
  point then touches ``FLOOR``); each impact reverses the vertical speed times the restitution
  ``e``: first impact at ``t1 = sqrt(2 h / g)``, speed after impact ``k`` is ``e^k g t1``.
* spins: rotates in place at a constant angular velocity (150-300 degrees per clip).
* grows / shrinks: in place, linear scale ``s(t) = 1 + (s_end - 1) t / D``.
* stays still: nothing changes.

Camera pan: the camera moves, the world does not. "the camera pans left" shifts everything
rendered (objects and the checkered background) to the right in the image by
``PAN_FRACTION * t / D`` of the frame width (pans right: to the left). Object motions in the
caption are in the world; ground-truth centroids are in the image (what is drawn), and the
ground truth also carries the per-frame ``camera_shift`` so that world = image - shift. On plain
backgrounds the pan shows only through the objects.

Sampling keeps every object fully in view for the whole clip. With two objects the second is
drawn in front; in about 70 % of the two-object scenes with a moving object the pair is placed so
that the mover crosses the other mid-clip, passing in front of or behind it. An object is never
hidden completely (centre distance at least 0.6 of the sum of circumradii), and the two are apart in at least three frames (a fifth of a long clip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vidiff.world.grammar import (
    BACKGROUND_CONFLICTS, BACKGROUNDS, COLORS, MOTIONS, SHAPES, SIZES, CaptionSpec, ObjectSpec, parse_caption,
)
from vidiff.world.splits import HELDOUT_COMBOS, SPLITS, UNSAMPLED_COMBOS, is_heldout

#: Equivalent-area radius (fraction of frame side) of small and large objects; area = pi r^2.
SIZE_RADIUS = {"small": 0.085, "large": 0.15}
#: Image shift of a full camera pan over the clip (fraction of frame width).
PAN_FRACTION = 0.12
#: Height (fraction of frame) of the lowest point of a bouncing object at impact.
FLOOR = 0.985
#: Checker tile side (fraction of frame side).
CHECKER_TILE = 0.125
#: Diamond width / height.
DIAMOND_ASPECT = 0.6
DEFAULT_FRAMES, DEFAULT_SIZE, DEFAULT_FPS = 17, 64, 8.0
_MARGIN = 0.02

# Shape geometry per unit equivalent-area radius (area of every shape = pi r^2).
_SQUARE_HALF = math.sqrt(math.pi) / 2
_TRIANGLE_CIRCUMRADIUS = math.sqrt(4 * math.pi / (3 * math.sqrt(3)))
_DIAMOND_HALF_HEIGHT = math.sqrt(math.pi / (2 * DIAMOND_ASPECT))
CIRCUMRADIUS = {
    "circle": 1.0,
    "square": _SQUARE_HALF * math.sqrt(2),
    "triangle": _TRIANGLE_CIRCUMRADIUS,
    "diamond": _DIAMOND_HALF_HEIGHT,
}
#: Extent from the centre at angle 0 as (left/right, up, down), per unit radius.
UPRIGHT_EXTENT = {
    "circle": (1.0, 1.0, 1.0),
    "square": (_SQUARE_HALF, _SQUARE_HALF, _SQUARE_HALF),
    "triangle": (_TRIANGLE_CIRCUMRADIUS * math.sqrt(3) / 2, _TRIANGLE_CIRCUMRADIUS, _TRIANGLE_CIRCUMRADIUS / 2),
    "diamond": (_DIAMOND_HALF_HEIGHT * DIAMOND_ASPECT, _DIAMOND_HALF_HEIGHT, _DIAMOND_HALF_HEIGHT),
}


@dataclass(frozen=True)
class SceneObject:
    """One object and its physical parameters (normalised units, seconds, degrees)."""

    size: str
    color: str
    shape: str
    motion: str
    radius: float  # equivalent-area radius at scale 1
    x0: float
    y0: float
    vx: float = 0.0
    vy: float = 0.0
    angle0: float = 0.0
    spin: float = 0.0  # degrees per second, counter-clockwise positive
    scale_end: float = 1.0  # linear scale at t = duration
    gravity: float = 0.0
    restitution: float = 0.0
    floor_y: float = 1.0  # centre height at impact

    def spec(self) -> ObjectSpec:
        return ObjectSpec(self.size, self.color, self.shape, self.motion)


@dataclass(frozen=True)
class Scene:
    """A sampled scene. ``objects`` are back to front; ``pan_speed`` is the signed image shift
    rate (fraction of width per second, positive = content moves right = camera pans left)."""

    objects: tuple[SceneObject, ...]
    background: str
    pan: str | None
    duration: float
    frames: int
    fps: float
    pan_speed: float = 0.0
    checker_phase: tuple[float, float] = (0.0, 0.0)
    seed: int | None = None
    split: str = "any"

    def spec(self) -> CaptionSpec:
        return CaptionSpec(tuple(o.spec() for o in self.objects), self.background, self.pan)

    def times(self, frames: int | None = None, fps: float | None = None) -> np.ndarray:
        """Frame times in seconds: ``k / fps`` for ``k < frames`` (defaults: the sampled ones)."""
        frames = self.frames if frames is None else int(frames)
        fps = self.fps if fps is None else float(fps)
        if frames < 1 or fps <= 0:
            raise ValueError(f"need frames >= 1 and fps > 0, got frames={frames}, fps={fps}")
        return np.arange(frames, dtype=np.float64) / fps


def caption(scene: Scene) -> str:
    """The grammar caption of a scene."""
    return scene.spec().text()


def object_motion(obj: SceneObject, times: np.ndarray, duration: float):
    """World-frame state at ``times``: ``(x, y, scale, angle_degrees)``, each shaped like times."""
    t = np.asarray(times, dtype=np.float64)
    x = obj.x0 + obj.vx * t
    y = obj.y0 + obj.vy * t
    scale = 1.0 + (obj.scale_end - 1.0) * t / duration
    angle = obj.angle0 + obj.spin * t
    if obj.gravity > 0:
        y = _bounce_height(t, obj.y0, obj.floor_y, obj.gravity, obj.restitution)
    return x, y, scale, angle


def _bounce_height(t: np.ndarray, y0: float, floor_y: float, g: float, e: float, max_bounces: int = 40):
    """Height of a ball dropped from rest at ``y0`` (y down) onto ``floor_y``, restitution ``e``.

    Before the first impact ``y = y0 + g t^2 / 2``; between impacts k and k+1 (starting at
    ``T_k`` with upward speed ``u_k = e^k g t1``) ``y = floor - u_k s + g s^2 / 2``, ``s = t - T_k``.
    """
    h = floor_y - y0
    t1 = math.sqrt(2 * h / g)
    y = np.where(t < t1, y0 + 0.5 * g * t**2, floor_y)
    start, speed = t1, e * g * t1
    for _ in range(max_bounces):
        flight = 2 * speed / g
        if flight < 1e-6:
            break
        s = t - start
        inside = (s >= 0) & (s < flight)
        y = np.where(inside, floor_y - speed * s + 0.5 * g * s**2, y)
        start, speed = start + flight, speed * e
    return y


def image_tracks(scene: Scene, times: np.ndarray):
    """Per object ``(x, y, scale, angle)`` in image coordinates (world + camera shift), and the
    camera shift ``[T]`` (fraction of width)."""
    shift = scene.pan_speed * np.asarray(times, dtype=np.float64)
    out = []
    for obj in scene.objects:
        x, y, s, a = object_motion(obj, times, scene.duration)
        out.append((x + shift, y, s, a))
    return out, shift


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _interval(rng, lo: float, hi: float, delta: float) -> float:
    """Start coordinate so that a path moving by ``delta`` stays in ``[lo, hi]``."""
    a, b = lo - min(0.0, delta), hi - max(0.0, delta)
    if a > b:  # path too long for the frame: centre it
        return 0.5 * (lo + hi - delta)
    return _uniform(rng, a, b)


def _sample_object(rng, attrs, duration: float, pan_shift: float) -> SceneObject:
    size, color, shape, motion = attrs
    r = SIZE_RADIUS[size] * _uniform(rng, 0.9, 1.1)
    side, up, down = (k * r for k in UPRIGHT_EXTENT[shape])
    lo, hi = _MARGIN, 1 - _MARGIN
    kw: dict = {}
    if motion in ("moves left", "moves right", "moves up", "moves down"):
        dist = _uniform(rng, 0.3, 0.42) * (-1 if motion in ("moves left", "moves up") else 1)
        if motion in ("moves left", "moves right"):
            span = (hi - side) - (lo + side) - abs(dist + pan_shift)
            if span < 0:  # shorten the path so that it fits; stays well above detection thresholds
                dist = math.copysign(abs(dist) + span, dist)
            x0 = _interval(rng, lo + side, hi - side, dist + pan_shift)
            y0 = _uniform(rng, lo + up, hi - down)
            kw = dict(vx=dist / duration)
        else:
            x0 = _interval(rng, lo + side, hi - side, pan_shift)
            y0 = _interval(rng, lo + up, hi - down, dist)
            kw = dict(vy=dist / duration)
    elif motion == "bounces":
        floor_y = FLOOR - down
        h = min(_uniform(rng, 0.3, 0.55), floor_y - (lo + up))
        t1 = _uniform(rng, 0.3, 0.45) * duration
        x0 = _interval(rng, lo + side, hi - side, pan_shift)
        y0 = floor_y - h
        kw = dict(gravity=2 * h / t1**2, restitution=_uniform(rng, 0.6, 0.8), floor_y=floor_y)
    else:
        ext = r * CIRCUMRADIUS[shape] if motion == "spins" else max(side, up, down)
        if motion == "grows":
            scale_end = _uniform(rng, 1.5, 1.8) if size == "small" else _uniform(rng, 1.35, 1.5)
            ext *= scale_end
            kw = dict(scale_end=scale_end)
        elif motion == "shrinks":
            kw = dict(scale_end=_uniform(rng, 0.45, 0.6))
        elif motion == "spins":
            turn = _uniform(rng, 150.0, 300.0) * (1 if rng.random() < 0.5 else -1)
            kw = dict(spin=turn / duration, angle0=_uniform(rng, 0.0, 360.0))
        x0 = _interval(rng, lo + ext, hi - ext, pan_shift)
        y0 = _uniform(rng, lo + ext, hi - ext) if hi - ext > lo + ext else 0.5
    return SceneObject(size, color, shape, motion, r, float(x0), float(y0), **kw)


def _draw_attrs(rng, split: str, exclude_colors: set[str]):
    if split == "heldout":
        pool = [c for c in HELDOUT_COMBOS if c[0] not in exclude_colors]
        color, shape, motion = pool[int(rng.integers(len(pool)))]
        return str(SIZES[int(rng.integers(2))]), color, shape, motion
    while True:
        size = SIZES[int(rng.integers(len(SIZES)))]
        color = COLORS[int(rng.integers(len(COLORS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
        if color in exclude_colors or (shape, motion) in UNSAMPLED_COMBOS:
            continue
        if split == "train" and is_heldout(color, shape, motion):
            continue
        return size, color, shape, motion


def _pair_ok(scene_objs, duration: float, times: np.ndarray) -> bool:
    """Two objects may overlap (the front one hides part of the back one) but never so much that
    one is hidden (centres at least 0.6 of the sum of circumradii apart), and they are apart
    (centre distance above 1.1 times the summed equal-area radii) in at least three frames (or a
    fifth of them), so each can be seen whole."""
    states = []
    for o in scene_objs:
        x, y, s, _ = object_motion(o, times, duration)
        states.append((x, y, s * o.radius, CIRCUMRADIUS[o.shape]))
    (x0, y0, r0, c0), (x1, y1, r1, c1) = states
    dist = np.hypot(x0 - x1, y0 - y1)
    if np.any(dist < 0.6 * (r0 * c0 + r1 * c1)):
        return False
    apart = dist > 1.1 * (r0 + r1) + 0.02  # about the visual (equal-area) radii
    return bool(apart.sum() >= max(3, 0.2 * len(times)) or apart.all())


def _in_view(obj: SceneObject, times: np.ndarray, duration: float, shift: np.ndarray) -> bool:
    x, y, s, _ = object_motion(obj, times, duration)
    x = x + shift
    if obj.motion == "spins":
        side = up = down = obj.radius * CIRCUMRADIUS[obj.shape]
    else:
        side, up, down = (k * obj.radius * s for k in UPRIGHT_EXTENT[obj.shape])
    lo, hi = _MARGIN, 1 - _MARGIN
    return bool(np.all(x - side >= lo) and np.all(x + side <= hi) and np.all(y - up >= lo) and np.all(y + down <= hi))


def _crossing(rng, objs, duration: float, times: np.ndarray, pan_shift: float):
    """Re-place one object so that a moving object passes over or behind it at a random time in
    the middle 60 % of the clip (offset 0.65-0.9 of the summed circumradii across the path);
    None when the pair cannot cross that way."""
    movers = [i for i, o in enumerate(objs) if o.motion in ("moves left", "moves right", "moves up", "moves down")]
    if not movers:
        return None
    m = movers[int(rng.integers(len(movers)))]
    o = 1 - m
    if objs[o].motion == "bounces":
        return None
    mover, other = objs[m], objs[o]
    reach = mover.radius * CIRCUMRADIUS[mover.shape] + other.radius * CIRCUMRADIUS[other.shape]
    horizontal = mover.motion in ("moves left", "moves right")
    for _ in range(6):  # a few crossing times and sides; the other object must stay in view
        half = duration * _uniform(rng, 0.2, 0.8)
        mx, my, _, _ = object_motion(mover, np.array([half]), duration)
        offset = reach * _uniform(rng, 0.65, 0.9) * (1 if rng.random() < 0.5 else -1)
        tx, ty = (mx[0], my[0] + offset) if horizontal else (mx[0] + offset, my[0])
        moved = SceneObject(**{**other.__dict__, "x0": float(tx - other.vx * half), "y0": float(ty - other.vy * half)})
        if _in_view(moved, times, duration, pan_shift * times / duration):
            break
    else:
        return None
    out = list(objs)
    out[o] = moved
    return out


def sample_scene(
    seed: int,
    split: str = "train",
    frames: int = DEFAULT_FRAMES,
    fps: float = DEFAULT_FPS,
    num_objects: int | None = None,
) -> Scene:
    """Sample a scene from ``seed`` (numpy PCG64: the same seed gives the same scene anywhere).

    Args:
        split: "train" never draws a combination of ``HELDOUT_COMBOS``; "heldout" draws every
            object from them; "any" draws from all sampleable combinations.
        frames, fps: the clip the scene is made for; its duration ``(frames - 1) / fps`` sets the
            speeds so that the motion fits the clip (render it at other frame counts/rates freely).
        num_objects: 1 or 2 (default: either, with equal probability).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if int(frames) < 2 or not fps > 0:
        raise ValueError(f"a scene needs frames >= 2 and fps > 0, got frames={frames}, fps={fps}")
    if num_objects not in (None, 1, 2):
        raise ValueError(f"num_objects must be 1, 2 or None, got {num_objects!r}")
    rng = np.random.default_rng(seed)
    frames, fps = int(frames), float(fps)
    duration = (frames - 1) / fps
    times = np.arange(frames) / fps
    n = int(rng.integers(1, 3)) if num_objects is None else num_objects
    pan = (None, None, None, None, "left", "right")[int(rng.integers(6))]
    pan_shift = {None: 0.0, "left": PAN_FRACTION, "right": -PAN_FRACTION}[pan]

    attrs = [_draw_attrs(rng, split, set())]
    if n == 2:
        attrs.append(_draw_attrs(rng, split, {attrs[0][1]}))
    objs = [_sample_object(rng, a, duration, pan_shift) for a in attrs]
    if n == 2:
        crossed = _crossing(rng, objs, duration, times, pan_shift) if rng.random() < 0.7 else None
        if crossed is not None and _pair_ok(crossed, duration, times):
            objs = crossed
        for attempt in range(400):
            if _pair_ok(objs, duration, times):
                break
            if attempt % 20 == 19:  # this pair cannot be placed apart: draw another second object
                attrs[1] = _draw_attrs(rng, split, {attrs[0][1]})
            objs = [_sample_object(rng, a, duration, pan_shift) for a in attrs]
        else:  # pragma: no cover - practically unreachable; fall back to one object
            objs = objs[:1]
    colors = {o.color for o in objs}
    backgrounds = [b for b in BACKGROUNDS if not colors & set(BACKGROUND_CONFLICTS[b])]
    background = backgrounds[int(rng.integers(len(backgrounds)))]
    phase = (float(rng.uniform(0, 2 * CHECKER_TILE)), float(rng.uniform(0, 2 * CHECKER_TILE)))
    return Scene(
        objects=tuple(objs), background=background, pan=pan, duration=duration, frames=frames,
        fps=fps, pan_speed=pan_shift / duration, checker_phase=phase, seed=int(seed), split=split,
    )


def scene_from_caption(text: str, seed: int = 0, frames: int = DEFAULT_FRAMES, fps: float = DEFAULT_FPS) -> Scene:
    """A scene that realises a caption: the caption fixes size, colour, shape, motion, background
    and pan; `seed` draws everything the caption leaves open (positions, speeds, checker phase).

    Used for image-to-video evaluation (the first frame of this render is the conditioning image)
    and to show the ground truth of a prompt. Raises WorldGrammarError for words outside the grammar.
    """
    spec = parse_caption(text)
    rng = np.random.default_rng(seed)
    frames, fps = int(frames), float(fps)
    duration = (frames - 1) / fps
    times = np.arange(frames) / fps
    pan_shift = {None: 0.0, "left": PAN_FRACTION, "right": -PAN_FRACTION}[spec.pan]
    attrs = [(o.size, o.color, o.shape, o.motion) for o in spec.objects]
    objs = [_sample_object(rng, a, duration, pan_shift) for a in attrs]
    if len(objs) == 2:
        for _ in range(400):
            if _pair_ok(objs, duration, times):
                break
            objs = [_sample_object(rng, a, duration, pan_shift) for a in attrs]
    phase = (float(rng.uniform(0, 2 * CHECKER_TILE)), float(rng.uniform(0, 2 * CHECKER_TILE)))
    return Scene(
        objects=tuple(objs), background=spec.background, pan=spec.pan, duration=duration, frames=frames,
        fps=fps, pan_speed=pan_shift / duration, checker_phase=phase, seed=int(seed), split="any",
    )

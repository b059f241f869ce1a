"""Vectorised anti-aliased renderer of shapes-world scenes, with per-frame ground truth.

Every shape is a circle or a convex polygon. Coverage of a pixel is the signed distance at its
centre mapped through a one-pixel ramp, ``coverage = clip(0.5 - sdf_px, 0, 1)``; for polygons the
signed distance is the largest signed distance to the edge lines, ``max_i (n_i . (p - c) - d_i)``
(exact inside and on the edges). Each term is a sum of an x-only and a y-only part, so a frame
costs one broadcast add per edge and pixel; everything is batched over clips, objects and frames.
Objects are composited back to front with ``img += coverage * (color - img)``.

Pixel coordinates: origin at the top-left corner, pixel (row i, column j) has its centre at
``(x, y) = (j + 0.5, i + 0.5)``; a normalised coordinate ``u`` is the pixel coordinate ``u * S``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vidiff.world.grammar import BACKGROUND_TONES, PALETTE
from vidiff.world.scene import (
    _DIAMOND_HALF_HEIGHT, _SQUARE_HALF, _TRIANGLE_CIRCUMRADIUS, CHECKER_TILE, CIRCUMRADIUS, DEFAULT_SIZE,
    DIAMOND_ASPECT, Scene, image_tracks,
)


def _edges(shape: str) -> tuple[np.ndarray, np.ndarray]:
    """Edge normals as screen angles (radians, CCW from +x) and edge distances per unit radius."""
    if shape == "square":
        ang, dist = [0, 90, 180, 270], [_SQUARE_HALF] * 4
    elif shape == "triangle":  # apex up; the last edge is repeated to keep four edges
        ang, dist = [270, 30, 150, 270], [_TRIANGLE_CIRCUMRADIUS / 2] * 4
    elif shape == "diamond":
        ax, ay = _DIAMOND_HALF_HEIGHT * DIAMOND_ASPECT, _DIAMOND_HALF_HEIGHT
        phi = math.degrees(math.atan2(ax, ay))
        ang, dist = [phi, 180 - phi, 180 + phi, 360 - phi], [ax * ay / math.hypot(ax, ay)] * 4
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    return np.radians(np.asarray(ang, dtype=np.float64)), np.asarray(dist, dtype=np.float64)


_EDGES = {s: _edges(s) for s in ("square", "triangle", "diamond")}


def shape_coverage(shape: str, cx, cy, radius, angle_deg, size: int, window=None) -> np.ndarray:
    """Anti-aliased coverage ``[N, F, H, W]`` float32 of ``N`` objects of one shape over ``F`` frames.

    ``cx, cy, radius`` (equivalent-area radius) are in pixels and ``angle_deg`` in screen degrees,
    each ``[N, F]``. The frame is ``size`` x ``size``; ``window = (y0, y1, x0, x1)`` restricts the
    output to those rows and columns.
    """
    cx, cy, radius, angle = (np.asarray(a, dtype=np.float32) for a in (cx, cy, radius, angle_deg))
    y0, y1, x0, x1 = (0, size, 0, size) if window is None else window
    dx = np.arange(x0, x1, dtype=np.float32)[None, None, :] + 0.5 - cx[..., None]  # [N, F, W]
    dy = np.arange(y0, y1, dtype=np.float32)[None, None, :] + 0.5 - cy[..., None]  # [N, F, H]
    if shape == "circle":
        sdf = np.sqrt(dx[:, :, None, :] ** 2 + dy[:, :, :, None] ** 2) - radius[..., None, None]
    else:
        normal_angle, dist = _EDGES[shape]
        theta = np.radians(angle)[..., None] + normal_angle.astype(np.float32)  # [N, F, 4]
        nx, ny = np.cos(theta), -np.sin(theta)  # y points down in the image
        sdf = None
        for i in range(4):
            xs = nx[..., i, None] * dx - (dist[i] * radius)[..., None]
            term = xs[:, :, None, :] + (ny[..., i, None] * dy)[:, :, :, None]
            sdf = term if sdf is None else np.maximum(sdf, term, out=sdf)
    np.subtract(0.5, sdf, out=sdf)
    return np.clip(sdf, 0.0, 1.0, out=sdf)


def background_frames(scene: Scene, times: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Background ``[F, S, S, 3]`` float32 (0-255): plain colour, or the checker moved by the pan.

    Checker with a box-filtered edge: per axis ``s = sign * min(1, 2 d)`` with ``d`` the pixel
    distance to the nearest tile edge, value ``tone0`` where ``s_x s_y = 1`` and ``tone1`` at -1.
    """
    tones = np.asarray(BACKGROUND_TONES[scene.background], dtype=np.float32)
    frames = len(times)
    if out is None:
        out = np.empty((frames, size, size, 3), dtype=np.float32)
    if len(tones) == 1:
        out[...] = tones[0]
        return out
    grid = (np.arange(size, dtype=np.float64) + 0.5) / size
    shift = scene.pan_speed * np.asarray(times, dtype=np.float64)

    def axis_wave(u):  # u [.., S] world coordinate -> smoothed square wave in [-1, 1]
        phase = u / CHECKER_TILE
        frac = phase - np.floor(phase)
        sign = np.where(np.floor(phase) % 2 == 0, 1.0, -1.0)
        d_px = np.minimum(frac, 1 - frac) * CHECKER_TILE * size
        return (sign * np.minimum(1.0, 2 * d_px)).astype(np.float32)

    sx = axis_wave(grid[None, :] - shift[:, None] + scene.checker_phase[0])  # [F, W]
    sy = axis_wave(grid + scene.checker_phase[1])  # [H]
    c = sx[:, None, :] * sy[None, :, None]  # [F, H, W]
    mid, half = (tones[0] + tones[1]) / 2, (tones[0] - tones[1]) / 2
    np.multiply(c[..., None], half, out=out)
    out += mid
    return out


@dataclass
class ObjectTruth:
    """Ground truth of one object over the frames (pixels, degrees)."""

    color: str
    shape: str
    size: str
    motion: str
    centroid: np.ndarray  # [F, 2] (x, y) in pixels: the shape's centre as drawn (camera included)
    area: np.ndarray  # [F] full (unoccluded) area in pixels^2
    angle: np.ndarray  # [F] degrees, counter-clockwise on screen
    visibility: np.ndarray  # [F] fraction of the object's coverage not hidden by objects in front
    mask: np.ndarray  # [F, S, S] bool, visible coverage >= 0.5

    def to_json(self) -> dict:
        return {
            "color": self.color, "shape": self.shape, "size": self.size, "motion": self.motion,
            "centroid": np.round(self.centroid, 4).tolist(), "area": np.round(self.area, 4).tolist(),
            "angle": np.round(self.angle, 4).tolist(), "visibility": np.round(self.visibility, 5).tolist(),
        }


@dataclass
class GroundTruth:
    """Per-frame truth of a clip; ``camera_shift`` [F] is the pan's image shift in pixels."""

    size: int
    fps: float
    camera_shift: np.ndarray
    objects: list[ObjectTruth]

    def to_json(self) -> dict:
        return {
            "size": self.size, "fps": self.fps, "camera_shift": np.round(self.camera_shift, 4).tolist(),
            "objects": [o.to_json() for o in self.objects],
        }


def _clip_times(scenes, frames, fps) -> tuple[np.ndarray, float]:
    frames_set = {s.frames if frames is None else int(frames) for s in scenes}
    fps_set = {s.fps if fps is None else float(fps) for s in scenes}
    if len(frames_set) > 1 or len(fps_set) > 1:
        raise ValueError(
            f"render_batch: scenes differ in frames {sorted(frames_set)} or fps {sorted(fps_set)}; "
            "pass frames= and fps= explicitly"
        )
    rate = fps_set.pop()
    return scenes[0].times(frames_set.pop(), rate), rate


def render_batch(
    scenes: list[Scene],
    size: int = DEFAULT_SIZE,
    frames: int | None = None,
    fps: float | None = None,
    with_truth: bool = True,
) -> tuple[np.ndarray, list[GroundTruth] | None]:
    """Render scenes at ``size`` x ``size``: uint8 ``[B, F, S, S, 3]`` and ground truth per clip.

    ``frames``/``fps`` default to the scenes' own (they must then agree across the batch).
    """
    scenes = list(scenes)
    if not scenes:
        raise ValueError("render_batch: no scenes")
    size = int(size)
    if size < 4:
        raise ValueError(f"size must be at least 4 pixels, got {size}")
    times, rate = _clip_times(scenes, frames, fps)
    num_frames = len(times)
    slots = []  # (clip, z, object, cx, cy, radius, angle) in pixels
    shifts = []
    for b, scene in enumerate(scenes):
        tracks, shift = image_tracks(scene, times)
        shifts.append(shift * size)
        for z, (obj, (x, y, s, a)) in enumerate(zip(scene.objects, tracks)):
            slots.append((b, z, obj, x * size, y * size, s * obj.radius * size, a))

    coverage, windows = [], []
    for b, z, obj, cx, cy, rad, ang in slots:
        reach = rad * CIRCUMRADIUS[obj.shape] + 1.0
        win = (
            int(np.clip(np.floor(np.min(cy - reach)), 0, size)), int(np.clip(np.ceil(np.max(cy + reach)), 0, size)),
            int(np.clip(np.floor(np.min(cx - reach)), 0, size)), int(np.clip(np.ceil(np.max(cx + reach)), 0, size)),
        )
        windows.append(win)
        coverage.append(shape_coverage(obj.shape, cx[None], cy[None], rad[None], ang[None], size, win)[0])

    by_clip: dict[int, list[int]] = {}
    for i, sl in enumerate(slots):
        by_clip.setdefault(sl[0], []).append(i)
    out = np.empty((len(scenes), num_frames, size, size, 3), dtype=np.uint8)
    img = np.empty((num_frames, size, size, 3), dtype=np.float32)  # reused: no page faults per clip
    for b, scene in enumerate(scenes):
        background_frames(scene, times, size, out=img)
        for i in sorted(by_clip.get(b, []), key=lambda i: slots[i][1]):  # back to front
            y0, y1, x0, x1 = windows[i]
            color = np.asarray(PALETTE[slots[i][2].color], dtype=np.float32)
            part = img[:, y0:y1, x0:x1]
            part += coverage[i][..., None] * (color - part)
        img += 0.5  # values stay in [0, 255]: truncation after +0.5 rounds
        out[b] = img
    if not with_truth:
        return out, None

    full = []
    for cov, (y0, y1, x0, x1) in zip(coverage, windows):
        f = np.zeros((num_frames, size, size), dtype=np.float32)
        f[:, y0:y1, x0:x1] = cov
        full.append(f)
    coverage = full
    truths = []
    for b, scene in enumerate(scenes):
        objs = []
        ids = by_clip.get(b, [])
        for i in ids:
            _, z, obj, cx, cy, rad, ang = slots[i]
            visible = coverage[i].copy()
            for j in ids:
                if slots[j][1] > z:
                    visible *= 1.0 - coverage[j]
            total = coverage[i].sum(axis=(1, 2))
            objs.append(ObjectTruth(
                color=obj.color, shape=obj.shape, size=obj.size, motion=obj.motion,
                centroid=np.stack([cx, cy], axis=1), area=np.pi * rad**2, angle=np.asarray(ang, dtype=np.float64),
                visibility=visible.sum(axis=(1, 2)) / np.maximum(total, 1e-9), mask=visible >= 0.5,
            ))
        truths.append(GroundTruth(size=size, fps=rate, camera_shift=shifts[b], objects=objs))
    return out, truths


def render(
    scene: Scene, size: int = DEFAULT_SIZE, frames: int | None = None, fps: float | None = None
) -> tuple[np.ndarray, GroundTruth]:
    """Render one scene: uint8 ``[F, S, S, 3]`` and its :class:`GroundTruth`."""
    video, truths = render_batch([scene], size=size, frames=frames, fps=fps, with_truth=True)
    return video[0], truths[0]

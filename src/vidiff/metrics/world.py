"""Ground-truth checks of shapes-world videos against their captions (no learned weights).

Per video, given the caption's expected attributes (see :mod:`vidiff.world.grammar`), the tracker
(:mod:`vidiff.metrics.tracker`) finds each object and this module judges:

* ``color_acc`` / ``shape_acc`` / ``size_acc`` / ``motion_acc``: fraction of the caption's objects
  whose attribute is right; ``all_correct``: 1 when every attribute of every object is right.
  Objects are matched by colour: an object of the expected colour present in at least
  ``MIN_PRESENCE`` of the frames is that object; an unmatched expected object takes an unclaimed
  present colour (its colour is then wrong), choosing the pairing whose shape, size and motion
  agree best with the caption.
* size: area (fraction of the frame) at the start for grows/shrinks (intercept of a line fitted
  to log-area), the median otherwise, against ``SIZE_AREA_THRESHOLD`` (geometric mean of the
  small and large areas).
* motion, from the track in world coordinates (image minus the caption's nominal camera pan,
  ``PAN_FRACTION`` of the width over the clip), in this order: bounces (falls at least 0.15 of the
  frame to a lowest point below mid-frame, then rises at least 0.05: a vertical velocity sign
  change near the floor), spins (fitted orientation change >= 60 degrees), grows/shrinks (log
  ratio of the largest areas in the last and first quarter of the frames, per clip length,
  >= log 1.4), moves left/right/up/down (fitted displacement over the clip >= 0.1
  of the frame along the dominant axis), otherwise stays still. A spinning circle cannot be seen
  to spin: "circle spins" counts as right when the circle stays in place.
* ``persistence``: fraction of frames in which each object is found (mean over objects).
* ``identity_drift``: ``area_drift + color_drift``: standard deviation of log-area (about its
  fitted line for grows/shrinks, about its mean otherwise) plus the norm of the per-channel
  standard deviation of the object's core colour / 255.
* ``jitter``: mean norm of the centroid's second difference ``c_{k+1} - 2 c_k + c_{k-1}`` in
  fractions of the frame, over consecutive found frames (horizontal only for "bounces", whose
  vertical acceleration is physical).
* ``background_flicker``: mean |frame_{k+1} - frame_k| / 255 over background pixels (outside
  foreground dilated by 2 px in both frames); with a camera pan the second frame is first aligned
  by the best horizontal shift.
  None when no background pixel is left.
* ``background_match``: fraction of the pixels outside objects within ``CANDIDATE_DISTANCE`` of the
  caption's background colours (1 for a right background).
* ``first_frame_psnr`` (dB) against a conditioning image when one is given.

Occlusion: in frames where the two tracked blobs touch (within 2 px), the one judged to be behind
(its area drops more while touching) may be partly hidden; those frames are left out of its
shape, size, drift and jitter statistics (unless fewer than two frames remain) and out of its
motion fit when its other frames still span 40 % of the clip.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from vidiff.metrics.tracker import ColorTrack, segment, track_colors
from vidiff.world.grammar import SHAPES, CaptionSpec, ObjectSpec, parse_caption
from vidiff.world.scene import PAN_FRACTION, SIZE_RADIUS

METRIC_KEYS = (
    "color_acc", "shape_acc", "size_acc", "motion_acc", "all_correct",
    "persistence", "identity_drift", "jitter", "background_flicker",
)
MIN_PRESENCE = 0.25
SIZE_AREA_THRESHOLD = math.pi * SIZE_RADIUS["small"] * SIZE_RADIUS["large"]
MOVE_THRESHOLD = 0.1
SPIN_THRESHOLD_DEG = 60.0
SCALE_LOG_THRESHOLD = math.log(1.4)
BOUNCE_FALL, BOUNCE_RISE, BOUNCE_FLOOR = 0.15, 0.05, 0.5


def _line_fit(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """Least-squares ``v ~ a + b t``: ``b = cov(t, v) / var(t)``, ``a = mean(v) - b mean(t)``
    (``b = 0`` when t does not vary)."""
    t = np.asarray(t, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    tm, vm = t.mean(), v.mean()
    var = ((t - tm) ** 2).sum()
    if len(t) < 2 or var == 0:
        return float(vm), 0.0
    b = float(((t - tm) * (v - vm)).sum() / var)
    return float(vm - b * tm), b


def as_uint8_frames(video) -> np.ndarray:
    """uint8 ``[F,H,W,3]`` from itself, or from a float ``[C,F,H,W]`` tensor/array in [-1, 1]."""
    if hasattr(video, "detach"):
        video = video.detach().cpu().float().numpy()
    arr = np.asarray(video)
    if arr.dtype == np.uint8:
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames [F,H,W,3], got shape {arr.shape}")
        return arr
    if arr.ndim != 4 or arr.shape[0] != 3:
        raise ValueError(f"expected float video [3,F,H,W] in [-1,1] or uint8 [F,H,W,3], got {arr.shape} {arr.dtype}")
    return np.clip(np.rint((arr.transpose(1, 2, 3, 0) + 1) * 127.5), 0, 255).astype(np.uint8)


def classify_motion(
    track: ColorTrack, used: np.ndarray, shape: str, pan: str | None, num_frames: int
) -> tuple[str, dict]:
    """The motion a track shows (one of the grammar's motions, or "unknown" when too short)."""
    idx = np.nonzero(used)[0]
    if len(idx) < 2:
        return "unknown", {}
    t = idx / max(num_frames - 1, 1)
    shift = {None: 0.0, "left": PAN_FRACTION, "right": -PAN_FRACTION}[pan] * t
    x = track.centroid[idx, 0] - shift
    y = track.centroid[idx, 1]
    _, vx = _line_fit(t, x)
    _, vy = _line_fit(t, y)
    # Area change from the largest areas of the first and last quarter: partial occlusion only
    # lowers an area, so maxima are robust to it.
    quarter = max(1, int(round(len(idx) / 4)))
    gap = max(t[-quarter:].mean() - t[:quarter].mean(), 1.0 / max(num_frames - 1, 1))
    log_rate = float(np.log(track.area[idx[-quarter:]].max() / track.area[idx[:quarter]].max()) / gap)
    orient = track.orientation(shape)[idx]
    _, spin = _line_fit(t, orient)
    # A bounce: some frame low in the picture that was reached by a fall and is followed by a rise.
    fallen = y - np.minimum.accumulate(y)
    risen = y - np.minimum.accumulate(y[::-1])[::-1]
    bounce = (fallen >= BOUNCE_FALL) & (risen >= BOUNCE_RISE) & (y > BOUNCE_FLOOR)
    info = {"displacement": [vx, vy], "rotation_deg": spin, "log_area_change": log_rate}
    if bounce.any():
        return "bounces", info
    if abs(spin) >= SPIN_THRESHOLD_DEG:
        return "spins", info
    if log_rate >= SCALE_LOG_THRESHOLD:
        return "grows", info
    if log_rate <= -SCALE_LOG_THRESHOLD:
        return "shrinks", info
    if max(abs(vx), abs(vy)) >= MOVE_THRESHOLD:
        if abs(vx) >= abs(vy):
            return ("moves right" if vx > 0 else "moves left"), info
        return ("moves down" if vy > 0 else "moves up"), info
    return "stays still", info


def _judge_object(expected: ObjectSpec, track: ColorTrack | None, contact: np.ndarray, pan, num_frames: int) -> dict:
    if track is None or not track.found.any():
        return {
            "expected": expected.phrase(), "found_color": None, "color": False, "shape": False,
            "size": False, "motion": False, "persistence": 0.0, "identity_drift": None, "jitter": None,
        }
    used = track.found & ~contact
    if used.sum() < 2:
        used = track.found
    votes = track.shape_votes(used)
    shape = max(SHAPES, key=lambda s: votes[s])
    idx = np.nonzero(used)[0]
    t = idx / max(num_frames - 1, 1)
    log_area = np.log(track.area[idx])
    if expected.motion in ("grows", "shrinks"):
        a0, slope = _line_fit(t, log_area)
        start_area = math.exp(a0)
        area_resid = log_area - (a0 + slope * t)
    else:
        start_area = float(np.median(track.area[idx]))
        area_resid = log_area - log_area.mean()
    size = "small" if start_area < SIZE_AREA_THRESHOLD else "large"
    span = (idx[-1] - idx[0]) / max(num_frames - 1, 1)
    motion_frames = used if len(idx) >= 3 and span >= 0.4 else track.found
    motion, info = classify_motion(track, motion_frames, shape, pan, num_frames)
    motion_ok = motion == expected.motion or (
        expected.shape == "circle" and expected.motion == "spins" and motion in ("stays still", "spins")
    )
    color_drift = float(np.linalg.norm(np.std(track.mean_color[idx], axis=0)) / 255.0)
    area_drift = float(np.std(area_resid))
    # Jitter over consecutive found frames: c[k+1] - 2 c[k] + c[k-1].
    c = np.where(used[:, None], track.centroid, np.nan)
    acc = c[2:] - 2 * c[1:-1] + c[:-2]
    if expected.motion == "bounces":
        acc = acc[:, :1]
    norms = np.linalg.norm(acc, axis=1)
    norms = norms[np.isfinite(norms)]
    return {
        "expected": expected.phrase(), "found_color": track.color, "found_shape": shape,
        "found_size": size, "found_motion": motion, "color": track.color == expected.color,
        "shape": shape == expected.shape, "size": size == expected.size, "motion": motion_ok,
        "persistence": track.presence, "identity_drift": area_drift + color_drift,
        "area_drift": area_drift, "color_drift": color_drift,
        "jitter": float(norms.mean()) if len(norms) else None, **info,
    }


def _assignments(spec: CaptionSpec, tracks: dict[str, ColorTrack]) -> list[list[ColorTrack | None]]:
    """Candidate ways to pair the caption's objects with tracks: an object of the expected colour
    present in at least ``MIN_PRESENCE`` of the frames is that object; the other expected objects
    take unclaimed present colours in every possible way (the caller keeps the pairing whose
    shape/size/motion agree best; ties go to the most present colours)."""
    candidates = {c: t for c, t in tracks.items() if t.presence >= MIN_PRESENCE}
    base: list[ColorTrack | None] = [None] * len(spec.objects)
    for i, obj in enumerate(spec.objects):
        if obj.color in candidates:
            base[i] = candidates[obj.color]
    claimed = {t.color for t in base if t is not None}
    rest = sorted(
        (t for c, t in candidates.items() if c not in claimed),
        key=lambda t: (-t.presence, -float(np.nanmedian(t.area))),
    )
    open_slots = [i for i, t in enumerate(base) if t is None]
    if not open_slots or not rest:
        return [base]
    rest = rest + [None] * max(0, len(open_slots) - len(rest))
    out = []
    for perm in itertools.permutations(rest, len(open_slots)):
        option = list(base)
        for i, t in zip(open_slots, perm):
            option[i] = t
        out.append(option)
    return out


def _contact(tracks: list[ColorTrack | None], num_frames: int) -> list[np.ndarray]:
    """Per track, the frames in which it may be partly hidden: frames where the two blobs touch
    (within 2 px), for the track judged to be behind (the one whose area shrinks more while
    touching, by a margin of 0.05); the front track is never hidden."""
    contact = [np.zeros(num_frames, bool) for _ in tracks]
    if len(tracks) == 2 and all(t is not None for t in tracks):
        a, b = tracks
        both = np.nonzero(a.found & b.found)[0]
        if len(both):
            grown = ndimage.maximum_filter(a.mask[both], size=(1, 5, 5))
            touch = np.zeros(num_frames, bool)
            touch[both] = (grown & b.mask[both]).any((1, 2))
            if touch.any():
                def deficit(t):  # touching area relative to the largest area seen
                    return float(np.median(t.area[touch]) / np.nanmax(t.area))
                da, db = deficit(a), deficit(b)
                if abs(da - db) > 0.05:  # otherwise they merely touch: nothing is hidden
                    contact[0 if da < db else 1] = touch
    return contact


def background_flicker(
    frames: np.ndarray, foreground: np.ndarray, pan: str | None = None, textured: bool = True
) -> float | None:
    """Mean |frame_{k+1} - frame_k| / 255 over pixels outside the 2-px-dilated foreground of both
    frames (per frame pair, then averaged). With a pan the second frame is first shifted
    horizontally by the shift (linear interpolation, searched over +-2x the nominal per-frame pan
    on every 4th row, grey) that best matches the first; ``textured=False`` (a plain background,
    where a pan changes nothing) skips the search."""
    num_frames, height, width = foreground.shape
    if num_frames < 2:
        return 0.0
    grown = ndimage.maximum_filter(foreground, size=(1, 5, 5))  # = 3x3 dilation twice
    bg = ~(grown[1:] | grown[:-1])  # [F-1,H,W]
    if pan and textured:
        x = frames.astype(np.float32)
        per_frame = max(PAN_FRACTION * width / (num_frames - 1), 1.0)
        shifts = np.linspace(-2 * per_frame, 2 * per_frame, 33)
        border = int(math.ceil(2 * per_frame)) + 1
        bg[:, :, :border] = False
        bg[:, :, width - border:] = False
        aligned = np.empty_like(x[1:])
        grey = x[:, ::4].mean(-1, keepdims=True)  # [F,h,W,1]
        for k in range(num_frames - 1):
            cand = _shift_x(grey[k + 1][None], shifts)  # [S,h,W,1]
            err = (np.abs(cand - grey[k][None])[..., 0] * bg[k, ::4][None]).sum((1, 2))
            aligned[k] = _shift_x(x[k + 1][None], shifts[int(np.argmin(err))])[0]
        diff = np.abs(aligned - x[:-1]).mean(-1)
    else:
        ch = [frames[..., c].astype(np.int16) for c in range(3)]
        diff = sum(np.abs(c[1:] - c[:-1]) for c in ch).astype(np.float32) / 3
    counts = bg.sum((1, 2))
    ok = counts > 0
    if not ok.any():
        return None
    per_pair = (diff * bg).sum((1, 2))[ok] / counts[ok]
    return float(per_pair.mean()) / 255.0


def _shift_x(img: np.ndarray, shifts) -> np.ndarray:
    """``out[s](x) = img(x + s)`` for images ``[1,H,W,C]`` and shifts ``[S]`` (or a scalar), with
    linear interpolation along x and repeated edges; returns ``[S,H,W,C]``."""
    width = img.shape[2]
    s = np.atleast_1d(np.asarray(shifts, dtype=np.float64))
    src = np.clip(np.arange(width)[None, :] + s[:, None], 0, width - 1)  # [S,W]
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, width - 1)
    frac = (src - lo).astype(np.float32)[:, None, :, None]
    base = img[0]
    return base[:, lo].transpose(1, 0, 2, 3) * (1 - frac) + base[:, hi].transpose(1, 0, 2, 3) * frac


def first_frame_psnr(frames: np.ndarray, image: np.ndarray) -> float:
    """PSNR (dB) of the first frame against ``image``: ``10 log10(255^2 / MSE)`` (inf if equal)."""
    image = np.asarray(image)
    if image.shape != frames.shape[1:]:
        raise ValueError(f"conditioning image has shape {image.shape}, the video's frames {frames.shape[1:]}")
    mse = float(np.mean((frames[0].astype(np.float64) - image.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def caption_object_track(frames: np.ndarray, spec: CaptionSpec) -> ColorTrack | None:
    """The track of the caption's first object: the largest blob of its colour in uint8
    `frames` [F, H, W, 3] against the caption's background (None when that colour is absent)."""
    return track_colors(frames, segment(frames, spec.background)).get(spec.objects[0].color)


def caption_object_area(frames, caption: str | CaptionSpec) -> np.ndarray | None:
    """The tracked area `[F]` (fraction of the frame) of the caption's first object in each of
    `frames`, NaN in frames where it is not found; None when its colour is absent throughout."""
    frames = as_uint8_frames(frames)
    spec = caption if isinstance(caption, CaptionSpec) else parse_caption(caption)
    track = caption_object_track(frames, spec)
    return None if track is None else np.where(track.found, track.area, np.nan)


def size_growth(frames, caption: str | CaptionSpec, clip: int) -> float | None:
    """How much a long video's object grew: the median tracked area of the caption's first
    object over the last `clip` frames divided by its median over the first `clip` frames,

        growth = median(area[F - clip:]) / median(area[:clip]),

    1 for an object that keeps its size. Long videos made window by window can show a drift
    that no single window does: each window growing the object by a few percent compounds.
    None when the object is not found in either part."""
    frames = as_uint8_frames(frames)
    if not 1 <= clip <= len(frames):
        raise ValueError(f"clip must be in [1, {len(frames)}] frames, got {clip}")
    area = caption_object_area(frames, caption)
    if area is None:
        return None
    first, last = area[:clip], area[-clip:]
    if not (np.isfinite(first).any() and np.isfinite(last).any()):
        return None
    return float(np.nanmedian(last) / np.nanmedian(first))


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def evaluate_video(frames, caption: str | CaptionSpec, image=None, video: str | None = None) -> dict:
    """Judge one video against its caption. ``frames``: uint8 ``[F,H,W,3]`` (or float
    ``[3,F,H,W]`` in [-1, 1]); ``image``: optional uint8 ``[H,W,3]`` conditioning image.
    Returns a row with ``video``, ``caption``, every key of ``METRIC_KEYS`` (None when undefined,
    e.g. jitter of an object never found), ``first_frame_psnr`` when an image is given, and
    per-object details under ``objects``."""
    frames = as_uint8_frames(frames)
    spec = caption if isinstance(caption, CaptionSpec) else parse_caption(caption)
    num_frames = frames.shape[0]
    seg = segment(frames, spec.background)
    tracks = track_colors(frames, seg)
    objs, best = None, -1
    for matched in _assignments(spec, tracks):
        contact = _contact(matched, num_frames)
        judged = [_judge_object(o, t, c, spec.pan, num_frames) for o, t, c in zip(spec.objects, matched, contact)]
        score = sum(o["shape"] + o["size"] + o["motion"] for o in judged)
        if score > best:
            objs, best = judged, score
    row = {
        "video": video,
        "caption": spec.text(),
        "color_acc": float(np.mean([o["color"] for o in objs])),
        "shape_acc": float(np.mean([o["shape"] for o in objs])),
        "size_acc": float(np.mean([o["size"] for o in objs])),
        "motion_acc": float(np.mean([o["motion"] for o in objs])),
        "all_correct": float(all(o["color"] and o["shape"] and o["size"] and o["motion"] for o in objs)),
        "persistence": float(np.mean([o["persistence"] for o in objs])),
        "identity_drift": _mean(o["identity_drift"] for o in objs),
        "jitter": _mean(o["jitter"] for o in objs),
        "background_flicker": background_flicker(
            frames, seg.foreground, spec.pan, textured=spec.background == "checkered"
        ),
        # Fraction of the pixels outside objects that look like the caption's background.
        "background_match": float((~seg.foreground).sum() / max((seg.labels < 0).sum(), 1)),
    }
    if image is not None:
        row["first_frame_psnr"] = first_frame_psnr(frames, image)
    row["objects"] = objs
    return row


def aggregate(rows: Sequence[dict]) -> dict:
    """Mean of every metric over the rows that define it, plus ``count``; ``first_frame_psnr``
    only when some row has it (infinite PSNRs of exact copies are capped at 100 dB)."""
    out: dict = {"count": len(rows)}
    for key in (*METRIC_KEYS, "background_match"):
        out[key] = _mean(r.get(key) for r in rows)
    psnr = [min(r["first_frame_psnr"], 100.0) for r in rows if r.get("first_frame_psnr") is not None]
    if psnr:
        out["first_frame_psnr"] = float(np.mean(psnr))
    return out


def shape_confusion(rows: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Counts ``{expected shape: {found shape: n}}`` over every object of ``rows`` (rows of
    `evaluate_video`); an object never found counts under ``"none"``. Its diagonal over its row
    sum is the per-shape shape accuracy: which shape a model draws in place of which."""
    out = {s: dict.fromkeys((*SHAPES, "none"), 0) for s in SHAPES}
    for row in rows:
        for spec, judged in zip(parse_caption(row["caption"]).objects, row["objects"]):
            out[spec.shape][judged.get("found_shape") or "none"] += 1
    return out


def evaluate_videos(
    videos: Iterable,
    captions: Sequence[str | CaptionSpec],
    images: Sequence | None = None,
    names: Sequence[str] | None = None,
) -> dict:
    """Judge many videos (in memory): ``videos`` is a list of uint8 ``[F,H,W,3]`` arrays or a
    float ``[B,3,F,H,W]`` tensor in [-1, 1]. Returns ``{"aggregate": {...}, "videos": [rows]}``."""
    if hasattr(videos, "ndim") and videos.ndim == 5:
        videos = [videos[i] for i in range(videos.shape[0])]
    videos = list(videos)
    if len(videos) != len(captions):
        raise ValueError(f"{len(videos)} videos but {len(captions)} captions")
    if images is not None and len(images) != len(videos):
        raise ValueError(f"{len(videos)} videos but {len(images)} images")
    rows = []
    for i, (vid, cap) in enumerate(zip(videos, captions)):
        image = None if images is None else images[i]
        name = names[i] if names is not None else str(i)
        rows.append(evaluate_video(vid, cap, image=image, video=name))
    return {"aggregate": aggregate(rows), "videos": rows}

"""A weight-free tracker for shapes-world videos: palette unmixing, components, shape moments.

Segmentation: the background colours are known from the caption, the object palette is known, and
every object pixel is a blend ``p = b + alpha (c - b)`` of one palette colour ``c`` over the
background ``b`` (anti-aliasing). For pixels far from the background (> ``CANDIDATE_DISTANCE``)
each palette colour is tried: ``alpha = clip(<p - b, c - b> / |c - b|^2, 0, 1)`` and the residual
``|p - b - alpha (c - b)|``; the colour with the smallest residual wins and the pixel belongs to
the object when ``alpha >= 0.5`` and the residual is below ``RESIDUAL_TOLERANCE``. Blends are thus
never mistaken for another palette colour (dark orange edges are not "red").

Per colour and frame the largest 8-connected component is the object. Its shape descriptors are
rotation- and scale-invariant complex moments about the alpha-weighted centroid,
``C_n = sum w |z|^2 e^{i n arg z} / sum w |z|^2`` with ``z = dx - i dy`` (screen orientation):
``|C_2|`` measures elongation (diamond), ``|C_3|`` three-fold symmetry (triangle), ``|C_4|``
four-fold symmetry (square, diamond), all near zero for a circle; ``arg C_n / n`` is the
orientation modulo the shape's symmetry. The shape is the nearest prototype in
``(|C_2|, |C_3|, |C_4|)``, measured on the world's own renders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from vidiff.world.grammar import BACKGROUND_TONES, COLORS, PALETTE, SHAPES

CANDIDATE_DISTANCE = 40.0
RESIDUAL_TOLERANCE = 60.0
#: Typical (|C2|, |C3|, |C4|) of each shape (from renders of 5-16 px radius at random angles).
SHAPE_PROTOTYPES = {
    "circle": (0.0, 0.0, 0.0),
    "square": (0.0, 0.0, 0.29),
    "triangle": (0.0, 0.55, 0.0),
    "diamond": (0.47, 0.0, 0.40),
}
#: Symmetry order whose moment gives the orientation of each shape (None: no orientation).
SYMMETRY_ORDER = {"circle": None, "square": 4, "triangle": 3, "diamond": 2}

_PALETTE = np.asarray([PALETTE[c] for c in COLORS], dtype=np.float32)
_PROTO = np.asarray([SHAPE_PROTOTYPES[s] for s in SHAPES], dtype=np.float64)
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = True  # 8-connected within a frame, never across frames


@dataclass
class Segmentation:
    """Per-pixel result: ``labels`` [F,H,W] int8 palette index (-1: none), ``alpha`` [F,H,W]
    blend weight of that colour, ``foreground`` [F,H,W] bool (anything far from the background)."""

    labels: np.ndarray
    alpha: np.ndarray
    foreground: np.ndarray


@dataclass
class ColorTrack:
    """The largest blob of one palette colour in every frame (NaN / False where absent).

    centroid [F,2] (x, y) as fractions of width/height; area [F] fraction of the frame (sum of
    alpha); moments [F,3] complex C_2, C_3, C_4; mean_color [F,3] 0-255; bbox [F,4] (y0,y1,x0,x1);
    mask [F,H,W] the blob's pixels.
    """

    color: str
    found: np.ndarray
    centroid: np.ndarray
    area: np.ndarray
    moments: np.ndarray
    mean_color: np.ndarray
    bbox: np.ndarray
    mask: np.ndarray

    @property
    def presence(self) -> float:
        return float(self.found.mean())

    def shape_votes(self, frames: np.ndarray) -> dict[str, float]:
        """Area-weighted votes of the nearest shape prototype over ``frames`` (bool [F])."""
        votes = dict.fromkeys(SHAPES, 0.0)
        feats = np.abs(self.moments[frames])
        if len(feats) == 0:
            return votes
        nearest = np.argmin(((feats[:, None, :] - _PROTO[None]) ** 2).sum(-1), axis=1)
        for k, a in zip(nearest, self.area[frames]):
            votes[SHAPES[k]] += float(a)
        return votes

    def orientation(self, shape: str) -> np.ndarray:
        """Orientation [F] in degrees modulo 360/n (n the shape's symmetry order), unwrapped over
        the frames where the object is found; zeros for a circle."""
        n = SYMMETRY_ORDER[shape]
        out = np.full(len(self.found), np.nan)
        if n is None:
            out[self.found] = 0.0
            return out
        phase = np.angle(self.moments[self.found, n - 2])
        out[self.found] = np.degrees(np.unwrap(phase)) / n
        return out


def segment(frames: np.ndarray, background: str) -> Segmentation:
    """Label object pixels of uint8 frames ``[F,H,W,3]`` by palette colour (see module docstring)."""
    tones = np.asarray(BACKGROUND_TONES[background], dtype=np.float32)
    channels = [frames[..., c].astype(np.float32) for c in range(3)]

    def dist2(tone):
        return sum((ch - t) ** 2 for ch, t in zip(channels, tone))

    d2 = [dist2(tone) for tone in tones]  # K x [F,H,W]
    if len(d2) == 1:
        nearest, dmin = np.zeros(frames.shape[:3], dtype=np.intp), d2[0]
    else:
        nearest, dmin = (d2[1] < d2[0]).astype(np.intp), np.minimum(d2[0], d2[1])
    foreground = dmin > CANDIDATE_DISTANCE**2
    labels = np.full(frames.shape[:3], -1, dtype=np.int8)
    alpha = np.zeros(frames.shape[:3], dtype=np.float32)
    if foreground.any():
        flat = np.flatnonzero(foreground)
        p = frames.reshape(-1, 3)[flat].astype(np.float32)  # [P,3]
        b = tones[nearest.ravel()[flat]]
        # Per channel [P,8] arrays: e = c - b, d = p - b; alpha = <d,e>/|e|^2, resid = |d - alpha e|.
        e = [_PALETTE[None, :, c] - b[:, c, None] for c in range(3)]
        d = [(p[:, c] - b[:, c])[:, None] for c in range(3)]
        a = np.clip(sum(dc * ec for dc, ec in zip(d, e)) / np.maximum(sum(ec * ec for ec in e), 1.0), 0.0, 1.0)
        resid = np.sqrt(sum((dc - a * ec) ** 2 for dc, ec in zip(d, e)))
        best = resid.argmin(-1)
        rows = np.arange(len(p))
        a_best, r_best = a[rows, best], resid[rows, best]
        keep = (a_best >= 0.5) & (r_best <= RESIDUAL_TOLERANCE)
        lab = np.where(keep, best, -1).astype(np.int8)
        labels.ravel()[flat] = lab
        alpha.ravel()[flat] = np.where(keep, a_best, 0.0)
    return Segmentation(labels, alpha, foreground)


def min_blob_pixels(height: int, width: int) -> int:
    """Smallest blob taken for an object: 0.15 % of the frame, at least 3 pixels."""
    return max(3, int(round(0.0015 * height * width)))


def track_colors(frames: np.ndarray, seg: Segmentation) -> dict[str, ColorTrack]:
    """Track the largest blob of every palette colour present in the video."""
    f_count, height, width = seg.labels.shape
    min_pixels = min_blob_pixels(height, width)
    tracks = {}
    present = np.bincount(seg.labels[seg.labels >= 0].astype(np.int64), minlength=len(COLORS))
    for ci in np.nonzero(present >= min_pixels)[0]:
        lab, n = ndimage.label(seg.labels == ci, structure=_IN_PLANE)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())
        slices = ndimage.find_objects(lab)
        best: dict[int, int] = {}
        for k, sl in enumerate(slices, start=1):
            f = sl[0].start
            if sizes[k] >= min_pixels and (f not in best or sizes[k] > sizes[best[f]]):
                best[f] = k
        if not best:
            continue
        tr = ColorTrack(
            color=COLORS[ci], found=np.zeros(f_count, bool), centroid=np.full((f_count, 2), np.nan),
            area=np.full(f_count, np.nan), moments=np.zeros((f_count, 3), complex),
            mean_color=np.full((f_count, 3), np.nan), bbox=np.zeros((f_count, 4), int),
            mask=np.zeros(seg.labels.shape, bool),
        )
        keep = np.zeros(n + 1, bool)
        for f, k in best.items():
            keep[k] = True
            sl = slices[k - 1]
            tr.found[f] = True
            tr.bbox[f] = (sl[1].start, sl[1].stop, sl[2].start, sl[2].stop)
        frames_idx = np.nonzero(tr.found)[0]
        # Moments of the kept blob of every frame at once, on the frames' joint bounding box.
        y0, y1 = tr.bbox[frames_idx, 0].min(), tr.bbox[frames_idx, 1].max()
        x0, x1 = tr.bbox[frames_idx, 2].min(), tr.bbox[frames_idx, 3].max()
        sel = keep[lab[frames_idx, y0:y1, x0:x1]]
        tr.mask[frames_idx, y0:y1, x0:x1] = sel
        w = seg.alpha[frames_idx, y0:y1, x0:x1] * sel  # [f,h,w]
        px = np.arange(x0, x1, dtype=np.float64)[None, None, :] + 0.5
        py = np.arange(y0, y1, dtype=np.float64)[None, :, None] + 0.5
        total = w.sum((1, 2))
        cx = (w * px).sum((1, 2)) / total
        cy = (w * py).sum((1, 2)) / total
        z = (px - cx[:, None, None]) - 1j * (py - cy[:, None, None])
        r2 = (z * z.conj()).real
        unit = np.where(r2 > 0, z / np.sqrt(np.maximum(r2, 1e-24)), 0)
        wr2 = w * r2
        den = np.maximum(wr2.sum((1, 2)), 1e-12)
        u2 = unit * unit
        tr.moments[frames_idx] = np.stack(
            [(wr2 * u2).sum((1, 2)), (wr2 * u2 * unit).sum((1, 2)), (wr2 * u2 * u2).sum((1, 2))], axis=1
        ) / den[:, None]
        core = w >= 0.9
        core = np.where(core.any((1, 2))[:, None, None], core, sel)
        pix = frames[frames_idx, y0:y1, x0:x1].astype(np.float64)
        tr.mean_color[frames_idx] = (pix * core[..., None]).sum((1, 2)) / core.sum((1, 2))[:, None]
        tr.centroid[frames_idx] = np.stack([cx / width, cy / height], axis=1)
        tr.area[frames_idx] = total / (height * width)
        tracks[tr.color] = tr
    return tracks

"""Distances between feature distributions: Fréchet distance (FVD), kernel distance (KVD).

The math works on any features (numpy, float64). FVD and KVD are these distances on I3D clip
embeddings (400-d Kinetics-400 logits before the softmax); the detector is a TorchScript file
loaded from a local path (:func:`load_i3d`), nothing is downloaded.

Sample-size bias, measured: the Fréchet distance between two draws of the *same* distribution is
far from 0 and shrinks like ~1/N. Two draws of a 400-d standard Gaussian score 302 / 82 / 40 at
N = 256 / 1000 / 2000; for another 400-d Gaussian the shared notes measured 193 / 49 / 24.5 / 5.0
at N = 256 / 1k / 2k / 10k. So fix N (2048 real / 2048 generated is the common protocol) and
always report a real-vs-real baseline at the same N next to a score: :func:`fvd_with_baseline`.
FVD also weighs per-frame appearance more than motion (Ge et al. 2024, content-debiased FVD);
pair it with the temporal metrics in :mod:`vidiff.metrics.temporal`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# --------------------------------------------------------------------------- matrix square roots


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition.

    ``A = V diag(w) V^T  ->  A^(1/2) = V diag(sqrt(max(w, 0))) V^T``; tiny negative eigenvalues from
    round-off are clipped to 0. The input is symmetrised first.
    """
    a = np.asarray(matrix, dtype=np.float64)
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr((S1 S2)^(1/2))`` for covariance matrices S1, S2, without a general ``sqrtm``.

    ``S1 S2`` is similar to the symmetric PSD matrix ``M = S1^(1/2) S2 S1^(1/2)``
    (``S1 S2 = S1^(1/2) M S1^(-1/2)`` when S1 is invertible, and by continuity otherwise), so both
    have the same eigenvalues and ``Tr((S1 S2)^(1/2)) = sum_i sqrt(eig_i(M))``. This agrees with
    ``trace(scipy.linalg.sqrtm(S1 @ S2))`` and is several times faster (two ``eigh`` calls).
    """
    root = sqrtm_psd(sigma1)
    m = root @ np.asarray(sigma2, dtype=np.float64) @ root
    eigenvalues = np.linalg.eigvalsh(0.5 * (m + m.T))
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2), squared:

        d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)).

    Uses :func:`trace_sqrt_product`. Shapes: ``mu [D]``, ``sigma [D, D]``.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    for name, value, shape in (("mu2", mu2, (d,)), ("sigma1", s1, (d, d)), ("sigma2", s2, (d, d))):
        if value.shape != shape:
            raise ValueError(f"{name} has shape {value.shape}, expected {shape} (mu1 has {d} dims)")
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    return max(value, 0.0)


# --------------------------------------------------------------------------- streaming statistics


@dataclass(eq=False)
class GaussianStats:
    """Streaming mean and covariance of feature vectors, in float64, mergeable across workers.

    Keeps ``n``, the mean and ``scatter = sum_i (x_i - mean)(x_i - mean)^T``. A batch is folded in
    with the pairwise update of Chan et al. (1979): for parts A and B with ``delta = mean_B -
    mean_A``, ``mean = mean_A + delta n_B / n`` and
    ``scatter = scatter_A + scatter_B + delta delta^T n_A n_B / n``. ``cov`` is the unbiased
    covariance ``scatter / (n - 1)`` (numpy's ``np.cov`` default).
    """

    dim: int
    n: int = 0
    mean: np.ndarray = field(default=None, repr=False)
    scatter: np.ndarray = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.dim <= 0:
            raise ValueError(f"GaussianStats dim must be positive, got {self.dim}")
        if self.mean is None:
            self.mean = np.zeros(self.dim, np.float64)
        if self.scatter is None:
            self.scatter = np.zeros((self.dim, self.dim), np.float64)

    @classmethod
    def from_features(cls, features: np.ndarray) -> GaussianStats:
        features = np.asarray(features)
        if features.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {features.shape}")
        stats = cls(features.shape[1])
        stats.update(features)
        return stats

    def update(self, features: np.ndarray) -> GaussianStats:
        """Fold in a batch ``[N, D]``; returns self."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must be [N, {self.dim}], got shape {x.shape}")
        if x.shape[0] == 0:
            return self
        batch_mean = x.mean(axis=0)
        centred = x - batch_mean
        self._combine(x.shape[0], batch_mean, centred.T @ centred)
        return self

    def merge(self, other: GaussianStats) -> GaussianStats:
        """Fold in the statistics of another accumulator (e.g. from another process); returns self."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dim {other.dim} into dim {self.dim}")
        if other.n:
            self._combine(other.n, other.mean, other.scatter)
        return self

    def _combine(self, n_b: int, mean_b: np.ndarray, scatter_b: np.ndarray) -> None:
        n_a, n = self.n, self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.scatter = self.scatter + scatter_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.n = n

    @property
    def cov(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError(f"covariance needs at least 2 samples, have {self.n}")
        return self.scatter / (self.n - 1)


def _as_stats(x) -> GaussianStats:
    return x if isinstance(x, GaussianStats) else GaussianStats.from_features(x)


def frechet_distance_between(a, b) -> float:
    """Fréchet distance between two feature sets ``[N, D]`` or :class:`GaussianStats`."""
    sa, sb = _as_stats(a), _as_stats(b)
    return frechet_distance(sa.mean, sa.cov, sb.mean, sb.cov)


def fvd_with_baseline(real_a, real_b, fake) -> dict:
    """A Fréchet distance reported next to its real-vs-real baseline.

    ``real_a``, ``real_b``: two disjoint sets of real-video features (or :class:`GaussianStats`);
    ``fake``: generated-video features. Returns ``{"fvd": d(real_a, fake), "baseline":
    d(real_a, real_b), "num_real", "num_baseline", "num_fake"}``. The baseline is the score a
    perfect generator would get at this sample size (see the module notes on bias), so it is only
    comparable when ``real_b`` and ``fake`` have the same size; a warning says when they do not.
    """
    sa, sb, sf = _as_stats(real_a), _as_stats(real_b), _as_stats(fake)
    if sb.n != sf.n:
        warnings.warn(
            f"real-vs-real baseline uses {sb.n} samples but the generated set has {sf.n}; "
            "Fréchet distances are biased by sample size, so the two are not directly comparable",
            stacklevel=2,
        )
    return {
        "fvd": frechet_distance(sa.mean, sa.cov, sf.mean, sf.cov),
        "baseline": frechet_distance(sa.mean, sa.cov, sb.mean, sb.cov),
        "num_real": sa.n,
        "num_baseline": sb.n,
        "num_fake": sf.n,
    }


# --------------------------------------------------------------------------- kernel distance


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """``k(x, y) = (x . y / D + coef0)^degree`` (the KID kernel, D = feature dimension)."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 with :func:`polynomial_kernel` between samples ``x [m, D]`` and ``y [n, D]``:

        sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (n (n-1))
        - 2 sum_{i,j} k(x_i, y_j) / (m n).
    """
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD needs at least 2 samples per set, got {m} and {n}")
    kxx = polynomial_kernel(x, x, degree, coef0)
    kyy = polynomial_kernel(y, y, degree, coef0)
    kxy = polynomial_kernel(x, y, degree, coef0)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2.0 * kxy.mean()
    )


def kernel_distance(
    real: np.ndarray, fake: np.ndarray, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID / KVD (Bińkowski et al. 2018): unbiased polynomial-kernel MMD^2 averaged over subsets.

    Each of ``num_subsets`` rounds draws ``min(subset_size, len(real), len(fake))`` samples from
    each set without replacement and computes :func:`mmd2_unbiased`. Returns ``(mean, std)`` over
    the rounds. Unbiased: its expectation is 0 when both sets come from one distribution (single
    values can be slightly negative). KVD is this on I3D features.
    """
    x, y = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be [N, D] with equal D, got {x.shape} and {y.shape}")
    m = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(x[rng.choice(x.shape[0], m, replace=False)], y[rng.choice(y.shape[0], m, replace=False)])
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


# --------------------------------------------------------------------------- I3D features (FVD)

I3D_FRAMES = 16
I3D_SIZE = 224
PREPROCESSING = ("styleganv", "center_crop")


def load_i3d(path: str | os.PathLike | None, device: str = "cpu"):
    """Load the I3D TorchScript detector (StyleGAN-V's ``i3d_torchscript.pt``) from a local file.

    The detector is called as ``detector(x, rescale=..., resize=..., return_features=True)`` on
    ``x [B, 3, T, H, W]`` float32 and returns ``[B, 400]`` features. Nothing is downloaded: get the
    file once and pass its path.
    """
    if path is None or str(path) == "":
        raise ValueError(
            "FVD needs the I3D detector: pass the path of a local TorchScript file "
            "(StyleGAN-V's i3d_torchscript.pt); nothing is downloaded at run time"
        )
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"I3D detector {path}: no such file")
    import torch

    try:
        detector = torch.jit.load(path, map_location=device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"I3D detector {path}: not a loadable TorchScript file ({err})") from err
    return detector.eval()


def _clip_tensor(video: np.ndarray, num_frames: int, index: int):
    import torch

    if not isinstance(video, np.ndarray) or video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        shape = getattr(video, "shape", None)
        raise ValueError(f"video {index} must be uint8 [F, H, W, 3], got {type(video).__name__} {shape}")
    if video.shape[0] < num_frames:
        raise ValueError(f"video {index} has {video.shape[0]} frames; FVD clips need {num_frames}")
    return torch.from_numpy(np.ascontiguousarray(video[:num_frames])).permute(3, 0, 1, 2).float()


def center_crop_preprocess(clip, size: int = I3D_SIZE):
    """``[3, T, H, W]`` values in [0, 255] -> ``[3, T, size, size]`` in [-1, 1]: bilinear resize of
    the short side to ``size`` (no antialiasing), centre crop, then ``x / 127.5 - 1``."""
    import math

    import torch.nn.functional as F

    _, _, h, w = clip.shape
    scale = size / min(h, w)
    target = (size, math.ceil(w * scale)) if h <= w else (math.ceil(h * scale), size)
    clip = F.interpolate(clip, size=target, mode="bilinear", align_corners=False)
    top, left = (clip.shape[2] - size) // 2, (clip.shape[3] - size) // 2
    clip = clip[:, :, top : top + size, left : left + size]
    return clip / 127.5 - 1.0


def i3d_features(
    detector,
    videos: Sequence[np.ndarray],
    *,
    num_frames: int = I3D_FRAMES,
    batch_size: int = 8,
    device: str = "cpu",
    preprocessing: str = "styleganv",
) -> np.ndarray:
    """I3D features ``[N, 400]`` (float64) of the first ``num_frames`` frames of each video.

    ``videos``: uint8 ``[F, H, W, 3]`` arrays with ``F >= num_frames`` (16 frames is the FVD
    protocol). Preprocessing:

    - ``"styleganv"`` (default, the StyleGAN-V protocol behind most published FVDs): the clip is
      passed as float values in [0, 255], shape ``[B, 3, T, H, W]``, with
      ``rescale=True, resize=True``: the detector itself maps values to [-1, 1] and resizes frames
      to 224x224 (aspect ratio not kept).
    - ``"center_crop"`` (the VideoGPT / common-metrics protocol): short side resized to 224,
      centre crop, values mapped to [-1, 1] here (:func:`center_crop_preprocess`), then
      ``rescale=False, resize=False``.
    """
    import torch

    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing {preprocessing!r} is not one of {PREPROCESSING}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    kwargs = (
        dict(rescale=True, resize=True, return_features=True)
        if preprocessing == "styleganv"
        else dict(rescale=False, resize=False, return_features=True)
    )
    out = []
    with torch.no_grad():
        for start in range(0, len(videos), batch_size):
            clips = [_clip_tensor(v, num_frames, start + i) for i, v in enumerate(videos[start : start + batch_size])]
            if preprocessing == "center_crop":
                clips = [center_crop_preprocess(c) for c in clips]
            elif len({tuple(c.shape) for c in clips}) > 1:
                raise ValueError("styleganv preprocessing needs videos of one size per batch; use batch_size=1")
            x = torch.stack(clips).to(device)
            out.append(detector(x, **kwargs).double().cpu().numpy())
    if not out:
        raise ValueError("no videos given")
    return np.concatenate(out)

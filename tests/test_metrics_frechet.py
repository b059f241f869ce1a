"""Fréchet / kernel distances against closed forms and scipy; FVD plumbing with a scripted stand-in
for the I3D detector (same call convention, not I3D)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidiff.metrics import frechet as fr

scipy_linalg = pytest.importorskip("scipy.linalg")


def random_spd(d: int, rng: np.random.Generator, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d) + (0 if rank else 0.1) * np.eye(d)


# --------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_one_dimensional_by_hand():
    # N(0, 4) vs N(1, 1): 1 + 4 + 1 - 2 sqrt(4) = 2
    assert fr.frechet_distance(np.zeros(1), 4 * np.eye(1), np.ones(1), np.eye(1)) == pytest.approx(2.0)


def test_frechet_distance_diagonal_and_commuting_closed_form():
    rng = np.random.default_rng(0)
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fr.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # same eigenvectors (commuting covariances): the closed form still holds in the rotated basis
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert fr.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_matches_scipy_sqrtm_formula_for_general_covariances():
    rng = np.random.default_rng(1)
    d = 64
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(d, rng), random_spd(d, rng)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert fr.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert fr.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_eigen_square_roots_agree_with_scipy_sqrtm():
    rng = np.random.default_rng(2)
    s = random_spd(40, rng)
    np.testing.assert_allclose(fr.sqrtm_psd(s), scipy_linalg.sqrtm(s).real, atol=1e-10)
    # rank-deficient covariances (fewer samples than dimensions) as in small FVD runs
    s1, s2 = random_spd(40, rng, rank=10), random_spd(40, rng, rank=25)
    expected = np.trace(scipy_linalg.sqrtm(s1 @ s2)).real
    assert fr.trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="sigma2"):
        fr.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


# --------------------------------------------------------------------------- streaming statistics


def test_streaming_stats_equal_batch_mean_and_cov():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((301, 7)) * 5 + 100  # offset: naive sums would lose digits
    stats = fr.GaussianStats(7)
    for lo, hi in [(0, 1), (1, 50), (50, 50), (50, 211), (211, 301)]:
        stats.update(x[lo:hi])
    assert stats.n == 301
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-10)
    # two workers merged = one pass over everything
    a, b = fr.GaussianStats.from_features(x[:120]), fr.GaussianStats.from_features(x[120:])
    merged = a.merge(b)
    np.testing.assert_allclose(merged.cov, np.cov(x, rowvar=False), rtol=1e-10)
    assert fr.frechet_distance_between(merged, x) == pytest.approx(0.0, abs=1e-8)


def test_streaming_stats_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        fr.GaussianStats(3).update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        _ = fr.GaussianStats.from_features(np.zeros((1, 3))).cov


def test_fvd_with_baseline_reports_both_and_warns_on_unequal_sizes():
    rng = np.random.default_rng(4)
    real_a, real_b = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    fake = rng.standard_normal((400, 8)) + 1.0
    out = fr.fvd_with_baseline(real_a, real_b, fake)
    assert out["num_real"] == out["num_baseline"] == out["num_fake"] == 400
    assert out["baseline"] == pytest.approx(fr.frechet_distance_between(real_a, real_b))
    assert out["fvd"] == pytest.approx(8.0, rel=0.15)  # mean shift of 1 in each of 8 dims
    assert out["baseline"] < 0.1 * out["fvd"]
    with pytest.warns(UserWarning, match="sample size"):
        fr.fvd_with_baseline(real_a, real_b[:200], fake)


# --------------------------------------------------------------------------- kernel distance


def test_mmd2_unbiased_matches_the_definition_by_loops():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)) + 0.5

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(a, b) for a in x for b in y) / 20
    assert fr.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kernel_distance_near_zero_for_same_distribution_and_positive_for_shifted():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((600, 16)), rng.standard_normal((600, 16))
    shifted = rng.standard_normal((600, 16)) + 0.5
    same_mean, same_std = fr.kernel_distance(a, b, num_subsets=20, subset_size=200)
    diff_mean, diff_std = fr.kernel_distance(a, shifted, num_subsets=20, subset_size=200)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert diff_mean > 10 * max(abs(same_mean), same_std)


# --------------------------------------------------------------------------- FVD plumbing


class StandInDetector(torch.nn.Module):
    """Same call convention as StyleGAN-V's i3d_torchscript.pt; returns simple statistics of
    exactly what it was fed, so the test can see the preprocessing."""

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        b = x.shape[0]
        feats = torch.cat(
            [
                x.mean(dim=(3, 4)).flatten(1),  # per channel and frame: catches layout mistakes
                x.amin(dim=(1, 2, 3, 4)).unsqueeze(1),
                x.amax(dim=(1, 2, 3, 4)).unsqueeze(1),
                torch.full((b, 1), float(x.shape[2])),
                torch.full((b, 1), float(x.shape[3])),
                torch.full((b, 1), float(x.shape[4])),
            ],
            dim=1,
        )
        if not return_features:
            feats = feats.softmax(dim=1)
        return feats


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("i3d") / "standin.pt"
    torch.jit.script(StandInDetector()).save(str(path))
    return str(path)


def make_videos(n: int, frames: int = 20, h: int = 48, w: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    videos = []
    for _ in range(n):
        v = rng.integers(0, 201, (frames, h, w, 3), dtype=np.uint8)
        v[16:] = 255  # frames past the 16-frame clip must not be used (would show as max 1.0)
        videos.append(v)
    return videos


def test_load_i3d_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="needs the I3D detector"):
        fr.load_i3d(None)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        fr.load_i3d(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="junk.pt"):
        fr.load_i3d(junk)


def test_i3d_features_styleganv_protocol(detector_path):
    detector = fr.load_i3d(detector_path)
    videos = make_videos(3)
    feats = fr.i3d_features(detector, videos, batch_size=2)
    reference = StandInDetector()
    for video, row in zip(videos, feats):
        clip = torch.from_numpy(video[:16]).permute(3, 0, 1, 2).float()[None]  # [1, 3, 16, H, W]
        expected = reference(clip / 127.5 - 1.0, resize=True, return_features=True)[0].double().numpy()
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-5)
    assert feats.shape == (3, 3 * 16 + 5)
    assert feats[0, -3:].tolist() == [16.0, 224.0, 224.0]
    assert feats[:, -5].min() >= -1.0 and feats[:, -4].max() <= 200 / 127.5 - 1 + 1e-6


def test_i3d_features_center_crop_protocol(detector_path):
    detector = fr.load_i3d(detector_path)
    videos = make_videos(2, h=40, w=80)
    feats = fr.i3d_features(detector, videos, preprocessing="center_crop")
    for video, row in zip(videos, feats):
        clip = torch.from_numpy(video[:16]).permute(3, 0, 1, 2).float()
        x = F.interpolate(clip, size=(224, 448), mode="bilinear", align_corners=False)[:, :, :, 112:336]
        expected = StandInDetector()(x[None] / 127.5 - 1.0, return_features=True)[0].double().numpy()
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-5)
    assert feats[0, -3:].tolist() == [16.0, 224.0, 224.0]


def test_i3d_features_reject_short_or_wrong_videos(detector_path):
    detector = fr.load_i3d(detector_path)
    with pytest.raises(ValueError, match="video 1 has 8 frames"):
        fr.i3d_features(detector, make_videos(1) + [make_videos(1, frames=8)[0]])
    with pytest.raises(ValueError, match="uint8"):
        fr.i3d_features(detector, [np.zeros((16, 8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="preprocessing"):
        fr.i3d_features(detector, make_videos(1), preprocessing="bogus")


def test_fvd_end_to_end_zero_for_identical_sets(detector_path):
    detector = fr.load_i3d(detector_path)
    feats = fr.i3d_features(detector, make_videos(6, h=24, w=24))
    out = fr.fvd_with_baseline(feats, feats, feats)
    assert out["fvd"] == pytest.approx(0.0, abs=1e-6) and out["baseline"] == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(out["fvd"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fr.fvd_with_baseline(feats, feats, feats)

"""Caption-weighted sampling: closed-form weights, draw frequencies, exact resume, the recipe knob."""

from __future__ import annotations

import pytest
import torch

from vidiff.data import LatentCacheDataset, ResumableLoader, build_latent_cache, caption_sampling_weights, weighted_shares
from vidiff.train.recipe import load_recipe

CONFIGS = "configs"
CAPTIONS = [
    "a large red square spins on a black background",
    "a small blue circle moves left on a gray background",
    "a large red circle bounces and a small green square spins on a navy background",
    "a small Red triangle grows on a black background",
]


def test_weights_are_the_product_of_the_factors_of_the_named_phrases():
    w = caption_sampling_weights(CAPTIONS, {"spins": 4.0, "red": 0.5, "square": 3.0})
    # spins*red*square, none, spins*red*square (both objects count once per phrase), red (case-insensitive)
    assert w.tolist() == [4.0 * 0.5 * 3.0, 1.0, 4.0 * 0.5 * 3.0, 0.5]
    assert w.dtype == torch.float64
    # Phrases match as whole words: "spin" is not in "spins"; several words match together
    assert caption_sampling_weights(CAPTIONS, {"moves left": 2.0}).tolist() == [1.0, 2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="'spin' occurs in none of the 4 captions"):
        caption_sampling_weights(CAPTIONS, {"spin": 2.0})
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="'spins' must be a finite number > 0"):
            caption_sampling_weights(CAPTIONS, {"spins": bad})


def test_weighted_shares_closed_form():
    w = caption_sampling_weights(CAPTIONS, {"spins": 4.0})
    shares = weighted_shares(CAPTIONS, w, ["spins", "circle"])
    assert shares["spins"] == pytest.approx((2 / 4, 8 / 10))
    assert shares["circle"] == pytest.approx((2 / 4, (1 + 4) / 10))


class _Indices(torch.utils.data.Dataset):
    """Sample i is the tensor i and a number drawn from its per-sample generator."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def get(self, index, generator):
        return {"index": torch.tensor(index), "noise": torch.rand((), generator=generator)}


def _drawn(loader, batches):
    it = iter(loader)
    return [next(it) for _ in range(batches)]


def test_weighted_epochs_draw_in_proportion_and_never_draw_a_zero_weight():
    weights = torch.tensor([0.0, 1.0, 2.0, 5.0])
    loader = ResumableLoader(_Indices(4), 4, seed=3, weights=weights)
    counts = torch.zeros(4)
    for batch in _drawn(loader, 2000):  # 8000 draws: the binomial std of a share is < 0.006
        counts += torch.bincount(batch["index"], minlength=4)
    assert counts[0] == 0
    assert torch.allclose(counts / counts.sum(), torch.tensor([0.0, 1 / 8, 2 / 8, 5 / 8]), atol=0.02)


def test_weighted_loader_resumes_to_the_exact_batch_and_repeats_get_their_own_generators():
    weights = torch.tensor([1.0, 1.0, 10.0, 1.0, 1.0, 1.0])
    reference = _drawn(ResumableLoader(_Indices(6), 2, seed=7, weights=weights), 7)
    loader = ResumableLoader(_Indices(6), 2, seed=7, weights=weights)
    it = iter(loader)
    for _ in range(4):
        next(it)
    resumed = ResumableLoader(_Indices(6), 2, seed=7, weights=weights)
    resumed.load_state_dict(loader.state_dict())
    for got, want in zip(_drawn(resumed, 3), reference[4:]):
        assert torch.equal(got["index"], want["index"]) and torch.equal(got["noise"], want["noise"])
    # Sample 2 is drawn several times an epoch; each draw has its own per-sample generator
    noises = [float(n) for b in reference for i, n in zip(b["index"], b["noise"]) if int(i) == 2]
    assert len(noises) > 2 and len(set(noises)) == len(noises)
    # Ranks read distinct positions of the same weighted order
    r0 = ResumableLoader(_Indices(6), 1, seed=7, weights=weights, rank=0, world_size=2)._epoch_keys(0)
    r1 = ResumableLoader(_Indices(6), 1, seed=7, weights=weights, rank=1, world_size=2)._epoch_keys(0)
    assert len(r0) == len(r1) == 3 and not set(r0) & set(r1)


def test_weights_must_fit_the_dataset():
    with pytest.raises(ValueError, match="weights has 3 entries for a dataset of 4"):
        ResumableLoader(_Indices(4), 2, weights=torch.ones(3))
    with pytest.raises(ValueError, match="finite, >= 0 and not all 0"):
        ResumableLoader(_Indices(4), 2, weights=torch.zeros(4))


def test_recipe_caption_weights_reach_the_diffusion_loader(tmp_path):
    from vidiff.train.diffusion_task import diffusion_data

    samples = [{"video": torch.zeros(3, 1, 2, 2), "caption": c} for c in CAPTIONS]
    cache = build_latent_cache(samples, lambda v: v[:, :1], tmp_path / "cache", encoder_key="k")
    assert LatentCacheDataset(cache).captions() == CAPTIONS
    cfg = load_recipe(f"{CONFIGS}/world_dit.toml", ["vae.path=unused", "data.batch_size=2", "data.caption_weights.spins=4"])
    assert cfg.data.caption_weights == {"spins": 4.0}
    loader = diffusion_data(cfg, cache)
    assert loader.weights.tolist() == [4.0, 1.0, 4.0, 1.0]
    counts = torch.zeros(4)
    for batch in _drawn(loader, 500):
        for caption in batch["caption"]:
            counts[CAPTIONS.index(caption)] += 1
    assert torch.allclose(counts / counts.sum(), torch.tensor([0.4, 0.1, 0.4, 0.1]), atol=0.04)
    typo = load_recipe(f"{CONFIGS}/world_dit.toml", ["vae.path=unused", "data.batch_size=2", "data.caption_weights.spinz=4"])
    with pytest.raises(ValueError, match=r"data.caption_weights on the cache .*cache: caption weight phrase 'spinz' occurs in none"):
        diffusion_data(typo, cache)
    with pytest.raises(ValueError, match="data.caption_weights: caption weight of 'spins' must be a finite number > 0"):
        load_recipe(f"{CONFIGS}/world_dit.toml", ["vae.path=unused", "data.caption_weights.spins=0"])

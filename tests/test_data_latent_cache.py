"""Latent cache: encode once, read back exactly, invalidate when the encoder changes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from vidiff.data import LatentCacheDataset, LatentCacheError, ResumableLoader, build_latent_cache, encoder_fingerprint


def _samples(n=5):
    g = torch.Generator().manual_seed(0)
    return [{"video": torch.rand(3, 4, 8, 8, generator=g) * 2 - 1, "caption": f"caption {i}", "name": f"v{i}.mp4"}
            for i in range(n)]


class Encoder(nn.Module):
    """A stand-in VAE encoder: [B, 3, F, H, W] -> [B, 2, F, H/2, W/2]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 2, kernel_size=(1, 2, 2), stride=(1, 2, 2))

    def forward(self, x):
        self.calls = getattr(self, "calls", 0) + 1
        return self.conv(x)


def test_cache_round_trip_and_hit(tmp_path):
    torch.manual_seed(0)
    enc = Encoder()
    key = encoder_fingerprint({"kind": "stand-in"}, enc)
    samples = _samples()
    out = build_latent_cache(samples, enc, tmp_path / "cache", encoder_key=key, batch_size=2, shard_size=3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 5 and [s["count"] for s in manifest["shards"]] == [3, 2]
    ds = LatentCacheDataset(out, encoder_key=key)
    assert len(ds) == 5
    with torch.no_grad():
        for i, s in enumerate(samples):
            item = ds[i]
            assert item["caption"] == s["caption"]
            assert torch.allclose(item["latents"], enc(s["video"][None])[0], atol=1e-6)
    calls = enc.calls
    build_latent_cache(samples, enc, out, encoder_key=key)  # same encoder: cache hit, nothing encoded
    assert enc.calls == calls
    # The cached dataset trains through the resumable loader: batches of latents
    batch = next(iter(ResumableLoader(ds, 2, seed=0)))
    assert batch["latents"].shape == (2, 2, 4, 4, 4) and len(batch["caption"]) == 2


def test_changed_encoder_invalidates_cache(tmp_path):
    torch.manual_seed(0)
    enc = Encoder()
    key = encoder_fingerprint({"kind": "stand-in"}, enc)
    assert encoder_fingerprint({"kind": "stand-in", "scale": 2}, enc) != key
    out = build_latent_cache(_samples(), enc, tmp_path / "c", encoder_key=key)
    with torch.no_grad():
        enc.conv.weight.mul_(2)
    new_key = encoder_fingerprint({"kind": "stand-in"}, enc)
    assert new_key != key
    with pytest.raises(LatentCacheError, match=f"built with encoder {key}.*{new_key}; rebuild"):
        LatentCacheDataset(out, encoder_key=new_key)
    build_latent_cache(_samples(), enc, out, encoder_key=new_key)
    ds = LatentCacheDataset(out, encoder_key=new_key)
    with torch.no_grad():
        assert torch.allclose(ds[0]["latents"], enc(_samples()[0]["video"][None])[0], atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_caption_dropout_is_seeded(tmp_path):
    out = build_latent_cache(_samples(), Encoder(), tmp_path / "c", encoder_key="k")
    ds = LatentCacheDataset(out, caption_dropout=0.5)
    drops = [ds.get(i % 5, torch.Generator().manual_seed(i))["caption"] == "" for i in range(200)]
    assert 60 < sum(drops) < 140
    assert drops == [ds.get(i % 5, torch.Generator().manual_seed(i))["caption"] == "" for i in range(200)]
    assert ds[0]["caption"] == "caption 0"


def test_missing_or_broken_cache_is_named(tmp_path):
    with pytest.raises(LatentCacheError, match="manifest.json is missing"):
        LatentCacheDataset(tmp_path)
    out = build_latent_cache(_samples(2), Encoder(), tmp_path / "c", encoder_key="k")
    (out / "shard-00000.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(LatentCacheError, match="shard-00000.safetensors is unreadable"):
        LatentCacheDataset(out)[0]


def test_in_memory_cache_equals_lazy_reads(tmp_path):
    torch.manual_seed(0)
    enc = Encoder()
    key = encoder_fingerprint({"kind": "stand-in"}, enc)
    out = build_latent_cache(_samples(7), enc, tmp_path / "cache", encoder_key=key, batch_size=2, shard_size=3)
    lazy = LatentCacheDataset(out, encoder_key=key, caption_dropout=0.5)
    held = LatentCacheDataset(out, encoder_key=key, caption_dropout=0.5, in_memory=True)
    for i in range(7):
        a, b = lazy.get(i, torch.Generator().manual_seed(i)), held.get(i, torch.Generator().manual_seed(i))
        assert a["caption"] == b["caption"] and torch.equal(a["latents"], b["latents"])
    (out / "shard-00001.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LatentCacheError, match="shard-00001"):
        LatentCacheDataset(out, in_memory=True)

"""LoRA on attention projections: base frozen, small file round trip, merge reproduces outputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vidiff.data.loader import SeededBatchStream
from vidiff.train import LoRAConfig, TrainConfig, Trainer, apply_lora, load_lora, merge_lora, save_lora


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        b, n, d = x.shape
        split = lambda t: t.view(b, n, self.heads, d // self.heads).transpose(1, 2)
        y = nn.functional.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x)))
        return self.to_out(y.transpose(1, 2).reshape(b, n, d))


class TinyTransformer(nn.Module):
    def __init__(self, dim: int = 16, depth: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleDict({"norm": nn.LayerNorm(dim), "attn": Attention(dim),
                                                   "ff": nn.Linear(dim, dim)}) for _ in range(depth))
        self.head = nn.Linear(dim, dim)

    def forward(self, x):
        for blk in self.blocks:
            x = x + blk["attn"](blk["norm"](x))
            x = x + blk["ff"](x).tanh()
        return self.head(x)


def _data():
    def make(g, position):
        x = torch.randn(4, 5, 16, generator=g)
        return {"x": x, "y": x.flip(1)}

    return SeededBatchStream(make, seed=0)


def _loss(m, batch, g):
    return ((m(batch["x"]) - batch["y"]) ** 2).mean()


def test_lora_training_leaves_base_frozen_and_merge_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    base = TinyTransformer()
    original = {k: v.clone() for k, v in base.state_dict().items()}
    model = apply_lora(copy.deepcopy(base), LoRAConfig(rank=4, alpha=8.0, target_modules=("to_q", "to_v")))
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable and all(".to_q.lora_" in n or ".to_v.lora_" in n for n in trainable)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), base(x), atol=1e-6)  # B = 0 at init: no change yet

    cfg = TrainConfig(steps=12, lr=1e-2, warmup_steps=0, ema_decay=0.0, checkpoint_every=100, log_every=1,
                      precision="fp32", device="cpu", progress=False, plot=False)
    Trainer(model, _loss, _data(), cfg, tmp_path / "run").fit()

    for name, value in original.items():  # base weights (now under .base_layer) untouched
        key = name.replace("to_q.", "to_q.base_layer.").replace("to_v.", "to_v.base_layer.")
        assert torch.equal(model.state_dict()[key], value), name
    model.eval()
    with torch.no_grad():
        adapted = model(x)
        assert not torch.allclose(adapted, base(x), atol=1e-4)  # training changed the adapter

    path = save_lora(model, tmp_path / "adapter")
    assert path.name == "lora.safetensors" and path.stat().st_size < 0.25 * sum(
        v.numel() * 4 for v in original.values())
    reloaded = load_lora(copy.deepcopy(base), path)
    merged = merge_lora(copy.deepcopy(model))
    assert not any("lora" in n or "base_layer" in n for n, _ in merged.named_parameters())
    assert set(merged.state_dict()) == set(base.state_dict())
    with torch.no_grad():
        assert torch.allclose(reloaded(x), adapted, atol=1e-6)
        assert torch.allclose(merged(x), adapted, atol=1e-5)
    # Merge by hand: W + (alpha / r) B A for one projection
    lq = model.blocks[0]["attn"].to_q
    expected = original["blocks.0.attn.to_q.weight"] + 2.0 * lq.lora_B["default"].weight @ lq.lora_A["default"].weight
    assert torch.allclose(merged.blocks[0]["attn"].to_q.weight, expected, atol=1e-6)


def test_lora_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"no nn.Linear .* matches LoRA target_modules \['to_qkv'\]"):
        apply_lora(TinyTransformer(), LoRAConfig(target_modules=("to_qkv",)))
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoRAConfig(rank=0)
    bad = tmp_path / "lora.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="lora.safetensors is not a readable safetensors"):
        load_lora(TinyTransformer(), bad)
    with pytest.raises(ValueError, match="has no LoRA adapters"):
        save_lora(TinyTransformer(), tmp_path)

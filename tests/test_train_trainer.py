"""The Trainer loop in-process: LR schedule, EMA, accumulation, divergence, logging, validation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from vidiff.data.loader import SeededBatchStream
from vidiff.train import EMA, TrainConfig, Trainer, TrainingDivergedError, ema_decay_at, warmup_cosine_lr
from vidiff.train.checkpoint import CheckpointError, list_checkpoints
from vidiff.train.logging import read_jsonl


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=6, lr=1e-2, warmup_steps=2, ema_decay=0.0, checkpoint_every=100, keep_last=0, log_every=1,
                precision="fp32", device="cpu", progress=False, plot=False, grad_clip=0.0, weight_decay=0.0)
    base.update(kw)
    return TrainConfig(**base)


def _regression(batch_size=4):
    def make(g, position):
        x = torch.randn(batch_size, 3, generator=g)
        return {"x": x, "y": x @ torch.tensor([[1.0], [-2.0], [0.5]])}

    return make


def _mse(m, batch, g):
    return ((m(batch["x"]) - batch["y"]) ** 2).mean()


def test_warmup_cosine_closed_form():
    kw = dict(base_lr=1.0, warmup_steps=4, total_steps=14, min_lr_ratio=0.2)
    assert [warmup_cosine_lr(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine_lr(4, **kw) == pytest.approx(1.0)
    assert warmup_cosine_lr(9, **kw) == pytest.approx(0.2 + 0.8 * 0.5)  # halfway: cos(pi/2) = 0
    assert warmup_cosine_lr(14, **kw) == pytest.approx(0.2)
    assert warmup_cosine_lr(100, **kw) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        warmup_cosine_lr(0, base_lr=1.0, warmup_steps=0, total_steps=1, min_lr_ratio=2.0)


def test_ema_matches_recurrence():
    model = nn.Linear(2, 1, bias=False)
    ema = EMA(model, decay=0.9, warmup_steps=4)
    expected = model.weight.detach().clone()
    for step in range(1, 8):
        with torch.no_grad():
            model.weight.add_(float(step))
        ema.update(model, step)
        d = 0.9 * min(1.0, step / 4)
        assert ema_decay_at(step, 0.9, 4) == pytest.approx(d)
        expected = d * expected + (1 - d) * model.weight.detach()
        assert torch.allclose(ema.shadow["weight"], expected, atol=1e-6)
    target = nn.Linear(2, 1, bias=False)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.shadow["weight"])


def test_one_step_equals_hand_written_adamw(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    ref = copy.deepcopy(model)
    cfg = _cfg(steps=3, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.1, grad_clip=0.0)
    data = SeededBatchStream(_regression(), seed=5)
    Trainer(model, _mse, data, cfg, tmp_path).fit()
    # Same batches, same optimizer by hand; biases (1-D) get no weight decay.
    opt = torch.optim.AdamW([{"params": [ref.weight], "weight_decay": 0.1}, {"params": [ref.bias], "weight_decay": 0.0}],
                            lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    for batch in list(zip(range(3), SeededBatchStream(_regression(), seed=5))):
        opt.zero_grad()
        _mse(ref, batch[1], None).backward()
        opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-7)


def test_grad_accumulation_equals_big_batch(tmp_path):
    torch.manual_seed(0)
    model_a = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    model_b = copy.deepcopy(model_a)
    big = SeededBatchStream(_regression(8), seed=1)
    halves = []

    class Halves:  # the same 8-sample batches, cut in two micro-batches
        rank = None

        def __init__(self):
            self.inner = SeededBatchStream(_regression(8), seed=1)

        def state_dict(self):
            return self.inner.state_dict()

        def load_state_dict(self, s):
            self.inner.load_state_dict(s)

        def __iter__(self):
            for b in self.inner:
                halves.append(1)
                yield {k: v[:4] for k, v in b.items()}
                yield {k: v[4:] for k, v in b.items()}

    Trainer(model_a, _mse, big, _cfg(grad_clip=0.5), tmp_path / "a").fit()
    Trainer(model_b, _mse, Halves(), _cfg(grad_clip=0.5, grad_accum=2), tmp_path / "b").fit()
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    log_a = [r["loss"] for r in read_jsonl(tmp_path / "a" / "log.jsonl")]
    log_b = [r["loss"] for r in read_jsonl(tmp_path / "b" / "log.jsonl")]
    assert log_a == pytest.approx(log_b, abs=1e-6)


def test_gradient_clipping_bounds_the_update(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    before = [p.detach().clone() for p in model.parameters()]
    # SGD-like check through AdamW is awkward; instead the logged norm is the pre-clip norm and
    # the clipped gradient used must have norm <= grad_clip: verify by a hook on the optimizer.
    seen = []
    trainer = Trainer(model, lambda m, b, g: 1000 * _mse(m, b, g), SeededBatchStream(_regression(), seed=2),
                      _cfg(steps=1, grad_clip=0.25), tmp_path)
    trainer.optimizer.register_step_pre_hook(
        lambda opt, a, k: seen.append(math.sqrt(sum(float(p.grad.square().sum()) for p in trainer.params))))
    trainer.fit()
    rec = read_jsonl(tmp_path / "log.jsonl")[0]
    assert rec["grad_norm"] > 0.25 and seen[0] == pytest.approx(0.25, rel=1e-5)
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_nonfinite_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)

    def loss_fn(m, batch, g):
        loss = _mse(m, batch, g)
        return loss * float("nan") if trainer.step == 4 else loss  # the 5th step goes bad

    trainer = Trainer(model, loss_fn, SeededBatchStream(_regression(), seed=2), _cfg(steps=10, checkpoint_every=2), tmp_path)
    with pytest.raises(TrainingDivergedError, match=r"step 5: the loss is nan.*ckpt-00000004"):
        trainer.fit()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000002", "ckpt-00000004"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_log_png_validation_and_refusal_to_overwrite(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    calls = []

    def validate(trainer, step):
        calls.append(step)
        return {"mse": float(step)}

    cfg = _cfg(steps=6, log_every=2, validate_every=3, checkpoint_every=3, plot=True, ema_decay=0.5)
    result = Trainer(model, _mse, SeededBatchStream(_regression(), seed=2), cfg, tmp_path, validate_fn=validate).fit()
    assert result.step == 6 and not result.interrupted and calls == [3, 6]
    records = read_jsonl(tmp_path / "log.jsonl")
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [2, 4, 6]
    assert all(r["samples_per_s"] > 0 and r["lr"] > 0 for r in train)
    assert [r["val/mse"] for r in records if "val/mse" in r] == [3.0, 6.0]
    png = (tmp_path / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        Trainer(nn.Linear(3, 1), _mse, SeededBatchStream(_regression(), seed=2), cfg, tmp_path).fit()


def test_resume_in_process_is_exact_and_rejects_wrong_model(tmp_path):
    def run(out, steps, resume=None, model=None):
        torch.manual_seed(1)
        model = model or nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.2), nn.Linear(8, 1))
        noisy = lambda m, b, g: ((m(b["x"] + torch.randn(b["x"].shape, generator=g)) - b["y"]) ** 2).mean()
        cfg = _cfg(steps=steps, checkpoint_every=3, ema_decay=0.9, grad_clip=1.0)
        return Trainer(model, noisy, SeededBatchStream(_regression(), seed=4), cfg, out).fit(resume), model

    _, full = run(tmp_path / "full", 8)
    run(tmp_path / "split", 5)  # checkpoint at 3 and 5 (the end)
    import shutil

    shutil.rmtree(tmp_path / "split" / "ckpt-00000005")
    _, resumed = run(tmp_path / "split", 8, resume=True)
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    a = [r["loss"] for r in read_jsonl(tmp_path / "full" / "log.jsonl")]
    b = [r["loss"] for r in read_jsonl(tmp_path / "split" / "log.jsonl")]
    assert a == b
    with pytest.raises(CheckpointError, match="model.safetensors does not fit"):
        run(tmp_path / "split", 9, resume=tmp_path / "split" / "ckpt-00000006", model=nn.Sequential(nn.Linear(3, 2)))


def test_config_validation_messages():
    with pytest.raises(ValueError, match="grad_accum must be >= 1, got 0"):
        TrainConfig(grad_accum=0)
    with pytest.raises(ValueError, match="distributed must be"):
        TrainConfig(distributed="horovod")
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        Trainer(nn.Linear(2, 2), _mse, SeededBatchStream(_regression()), _cfg(gradient_checkpointing=True), "/tmp/unused")

"""Two CPU processes under torchrun (gloo) match one process with the same global batch.

This file is also the script torchrun launches:
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/test_train_distributed.py OUT
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

STEPS = 5
HERE = Path(__file__).resolve()


class GlobalBatchShard:
    """Global batch p (16 rows, seeded by p) of which this rank reads rows rank, rank + R, ..."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size, self.position = rank, world_size, 0

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]

    def __iter__(self):
        from vidiff.data.loader import derive_seed

        while True:
            g = torch.Generator().manual_seed(derive_seed(9, self.position))
            x = torch.randn(16, 4, generator=g)
            y = torch.sin(3 * x).sum(dim=1, keepdim=True)
            self.position += 1
            yield {"x": x[self.rank :: self.world_size], "y": y[self.rank :: self.world_size]}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))


def _loss(m, batch, g):
    return ((m(batch["x"]) - batch["y"]) ** 2).mean()


def _cfg(mode: str, steps: int = STEPS):
    from vidiff.train import TrainConfig

    return TrainConfig(steps=steps, lr=1e-2, warmup_steps=2, grad_clip=0.5, grad_accum=2, ema_decay=0.8,
                       checkpoint_every=3, keep_last=0, log_every=1, precision="fp32", device="cpu",
                       distributed=mode, fsdp_units=("Linear",), progress=False, plot=False)


def _train(out: Path, mode: str, rank: int = 0, world_size: int = 1, resume=None):
    from vidiff.train import Trainer

    return Trainer(_model(), _loss, GlobalBatchShard(rank, world_size), _cfg(mode), out).fit(resume)


def _final(out: Path):
    from vidiff.train.checkpoint import latest_checkpoint, load_checkpoint
    from vidiff.train.logging import read_jsonl

    ckpt = load_checkpoint(latest_checkpoint(out))
    return ckpt, [r["loss"] for r in read_jsonl(out / "log.jsonl") if "loss" in r]


def _worker(out: Path) -> None:
    import shutil

    from vidiff.train.distributed import barrier, init_distributed, shutdown_distributed

    info = init_distributed("cpu")
    assert info.world_size == 2
    _train(out / "ddp", "ddp", info.rank, info.world_size)
    _train(out / "fsdp", "fsdp", info.rank, info.world_size)
    # FSDP resume: from the step-3 checkpoint of a copy, to the end again
    if info.is_main:
        shutil.copytree(out / "fsdp" / "ckpt-00000003", out / "fsdp_resumed" / "ckpt-00000003")
        shutil.copy(out / "fsdp" / "log.jsonl", out / "fsdp_resumed" / "log.jsonl")
    barrier()
    _train(out / "fsdp_resumed", "fsdp", info.rank, info.world_size, resume=True)
    shutdown_distributed()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(HERE), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    _train(tmp_path / "single", "none")
    single, single_losses = _final(tmp_path / "single")
    assert single.step == STEPS and len(single_losses) == STEPS
    for mode in ("ddp", "fsdp", "fsdp_resumed"):
        ckpt, losses = _final(tmp_path / mode)
        assert ckpt.step == STEPS
        assert len(losses) == STEPS  # one writer: rank 0 alone logs
        assert len(ckpt.trainer_state["ranks"]) == 2
        assert [r["data"]["position"] for r in ckpt.trainer_state["ranks"]] == [STEPS * 2, STEPS * 2]
        assert losses == pytest.approx(single_losses, abs=1e-5), mode
        for name, value in single.model.items():
            assert torch.allclose(ckpt.model[name], value, atol=1e-5), (mode, name)
        for name, value in single.ema.items():
            assert torch.allclose(ckpt.ema[name], value, atol=1e-5), (mode, name)
        # optimizer state is saved whole (unsharded) and keyed by parameter name
        assert torch.allclose(ckpt.optimizer["state"]["0.weight"]["exp_avg"],
                              single.optimizer["state"]["0.weight"]["exp_avg"], atol=1e-5)


def test_fsdp2_wraps_and_trains_in_one_cpu_process(tmp_path, monkeypatch):
    """FSDP2 on a single gloo process: constructs, trains, checkpoints (world size 1)."""
    import torch.distributed as dist

    from vidiff.train.distributed import shutdown_distributed

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29500 + os.getpid() % 1000))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    try:
        _train(tmp_path / "fsdp", "fsdp")
        assert dist.is_initialized()
    finally:
        shutdown_distributed()
        monkeypatch.undo()
    assert not dist.is_initialized()
    _train(tmp_path / "single", "none")
    a, la = _final(tmp_path / "fsdp")
    b, lb = _final(tmp_path / "single")
    assert la == pytest.approx(lb, abs=1e-6)
    for name, value in b.model.items():
        assert torch.allclose(a.model[name], value, atol=1e-6)


def test_distributed_mode_needs_a_process_group(tmp_path):
    from vidiff.train import Trainer

    with pytest.raises(RuntimeError, match="needs a process group: launch with torchrun"):
        Trainer(_model(), _loss, GlobalBatchShard(0, 1), _cfg("ddp"), tmp_path)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))

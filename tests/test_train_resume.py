"""Crash safety and exact resume of the Trainer, with real processes killed by real signals.

This file is also the tiny training script the tests launch:
    python tests/test_train_resume.py OUT_DIR [--resume] [--delay SECONDS]
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STEPS = 40
HERE = Path(__file__).resolve()


def _tiny_run(out_dir: str, resume: bool, delay: float = 0.0, signal_at_call: int | None = None, sig: int = 0):
    import torch
    from torch import nn

    from vidiff.data.loader import SeededBatchStream
    from vidiff.train import TrainConfig, Trainer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Dropout(0.1), nn.Linear(16, 1))

    def make_batch(g: torch.Generator, position: int) -> dict:
        x = torch.randn(8, 4, generator=g)
        return {"x": x, "y": torch.sin(x.sum(dim=1, keepdim=True))}

    calls = [0]

    def loss_fn(m: nn.Module, batch: dict, g: torch.Generator) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == signal_at_call:
            os.kill(os.getpid(), sig)  # as if the user pressed Ctrl-C / the scheduler sent SIGTERM
        if delay:
            time.sleep(delay)
        # Noise drawn from the trainer's generator: resume must restore it exactly.
        noise = 0.1 * torch.randn(batch["x"].shape, generator=g)
        return ((m(batch["x"] + noise) - batch["y"]) ** 2).mean()

    cfg = TrainConfig(steps=STEPS, lr=3e-3, warmup_steps=5, grad_clip=1.0, grad_accum=2, ema_decay=0.9,
                      ema_warmup_steps=4, checkpoint_every=5, keep_last=2, log_every=1, seed=3,
                      precision="fp32", device="cpu", progress=False, plot=False)
    trainer = Trainer(model, loss_fn, SeededBatchStream(make_batch, seed=11), cfg, out_dir)
    return trainer.fit(resume=True if resume else None)


def _losses(out_dir: Path) -> dict[int, float]:
    from vidiff.train.logging import read_jsonl

    records = [r for r in read_jsonl(out_dir / "log.jsonl") if "loss" in r]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)), f"log has repeated or unordered steps: {steps}"
    return {r["step"]: r["loss"] for r in records}


def _launch(out_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(HERE), str(out_dir), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(proc: subprocess.Popen, out_dir: Path, step: int) -> None:
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc={proc.returncode}) before reaching step {step}: {proc.stderr.read()[-2000:]}")
        log = out_dir / "log.jsonl"
        if log.exists() and log.read_text().count('"loss"') >= step:
            return
        time.sleep(0.005)
    pytest.fail(f"run did not reach step {step} in 90 s")


def _assert_checkpoints_whole(out_dir: Path) -> None:
    from vidiff.train.checkpoint import list_checkpoints, load_checkpoint

    for path in list_checkpoints(out_dir):
        load_checkpoint(path)  # raises if any file is missing or truncated


@pytest.fixture(scope="module")
def reference_losses(tmp_path_factory) -> dict[int, float]:
    out = tmp_path_factory.mktemp("uninterrupted")
    _tiny_run(str(out), resume=False)
    losses = _losses(out)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


@pytest.mark.slow
def test_sigkill_at_random_step_then_resume_matches_uninterrupted(tmp_path, reference_losses):
    from vidiff.train.checkpoint import list_checkpoints

    kill_step = random.Random(os.urandom(8)).randint(6, STEPS - 5)  # after the first checkpoint (5)
    proc = _launch(tmp_path, "--delay", "0.02")
    _wait_for_step(proc, tmp_path, kill_step)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    _assert_checkpoints_whole(tmp_path)  # a kill mid-save leaves only a .tmp-* directory
    ckpts = list_checkpoints(tmp_path)
    assert ckpts, f"no checkpoint after killing at step {kill_step}"
    assert all(not p.name.startswith(".") for p in ckpts)

    _tiny_run(str(tmp_path), resume=True)  # in this process: saves a second torch start-up
    resumed = _losses(tmp_path)
    assert sorted(resumed) == list(range(1, STEPS + 1)), f"killed at step {kill_step}"
    for step, loss in reference_losses.items():
        assert abs(resumed[step] - loss) <= 1e-6, f"step {step} (killed at {kill_step}): {resumed[step]} != {loss}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".trash-"))]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000035", "ckpt-00000040"]  # keep_last=2
    _assert_checkpoints_whole(tmp_path)


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_checkpoint_write(tmp_path, reference_losses):
    """Die between two files of the step-10 checkpoint: only a .tmp directory is left behind."""
    from vidiff.train.checkpoint import latest_checkpoint, list_checkpoints

    proc = _launch(tmp_path, "--die-in-save", "10")
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    temporaries = [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-ckpt-00000010")]
    assert len(temporaries) == 1 and (tmp_path / temporaries[0] / "model.safetensors").exists()
    assert latest_checkpoint(tmp_path).name == "ckpt-00000005"
    _assert_checkpoints_whole(tmp_path)
    _tiny_run(str(tmp_path), resume=True)  # in this process: saves a second torch start-up
    resumed = _losses(tmp_path)
    assert max(abs(resumed[s] - reference_losses[s]) for s in reference_losses) <= 1e-6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000035", "ckpt-00000040"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_checkpoint_and_returns_cleanly(tmp_path, reference_losses, sig):
    from vidiff.train.checkpoint import latest_checkpoint, load_checkpoint

    # grad_accum=2: call 15 is the first micro-batch of step 8; the step finishes, then it stops.
    result = _tiny_run(str(tmp_path), resume=False, signal_at_call=15, sig=sig)
    assert result.interrupted and result.step == 8
    assert signal.getsignal(sig) is not None and signal.getsignal(sig) != result  # handler restored
    assert load_checkpoint(latest_checkpoint(tmp_path)).step == 8
    assert max(_losses(tmp_path)) == 8
    result = _tiny_run(str(tmp_path), resume=True)
    assert not result.interrupted and result.step == STEPS
    resumed = _losses(tmp_path)
    assert max(abs(resumed[s] - reference_losses[s]) for s in reference_losses) <= 1e-6


if __name__ == "__main__":
    args = sys.argv[1:]
    delay = float(args[args.index("--delay") + 1]) if "--delay" in args else 0.0
    if "--die-in-save" in args:
        import vidiff.train.checkpoint as ckpt_module

        die_at = ckpt_module.checkpoint_name(int(args[args.index("--die-in-save") + 1]))
        real_fsync = ckpt_module._fsync_file

        def fsync_then_die(path):
            real_fsync(path)
            if die_at in str(path.parent) and path.name == "model.safetensors":
                os.kill(os.getpid(), signal.SIGKILL)

        ckpt_module._fsync_file = fsync_then_die
    _tiny_run(args[0], "--resume" in args, delay)

"""Train world-model variants on one GPU inside a fixed wall-clock budget, side by side.

A lent accelerator comes for minutes, not hours, so this script spends them in one go:

1. encode a large latent cache of world clips once (`data.cache_workers` processes render, the
   VAE encodes on the GPU), shared by every variant;
2. calibrate: each variant trains `--calib-steps` steps (all at once, as they will run) in a
   scratch folder, and its measured steps/s sets `train.steps = rate x budget`, so the
   warmup-cosine ends at its minimum when the budget is spent;
3. train all variants at once (a small DiT leaves most of the GPU idle: its step time is the
   Python side's kernel launches), each with its own process and CPU cores;
4. export each run's EMA weights as a VideoPipeline folder (a run stopped by the hard time limit
   saves a checkpoint on SIGTERM and is exported from it).

Every step is a plain `vidiff train` command, printed before it runs, so a run can be repeated
or resumed by hand (`--resume`). Example (the session-11 runs on an H200; a CPU rehearsal last):

    python scripts/device_train.py --out runs/device --variants ft,big --budget 380 --total 540 --clips 65536 --batch 256
    python scripts/device_train.py --out runs/device --variants pf --total 270 --clips 32768 --batch 512
    python scripts/device_train.py --out /tmp/rehearsal --device cpu --budget 20 --clips 256 \\
        --batch 8 --calib-steps 10 --cache-workers 2 --loader-workers 0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SHIPPED = "src/vidiff/assets/world-dit"

# The caption terms of the shipped model's fine-tunes (src/vidiff/assets/README.md), from the start.
RECIPE_TERMS = [
    "diffusion.image_loss_weight=1.0", "diffusion.word_loss_weight=0.05",
    "diffusion.high_noise_prob=0.35", "diffusion.high_noise_from=0.9", "diffusion.shift=3.0",
]

VIDEO, PER_FRAME = "configs/world_dit.toml", "configs/world_per_frame.toml"
VARIANTS = {  # name: (recipe, overrides)
    # The shipped model trained on, on 8x more clips with a 16x larger batch and a fresh cosine.
    "ft": (VIDEO, [f"model.init={SHIPPED}", "train.lr=3e-4", "train.warmup_steps=300", "train.min_lr_ratio=0.05"]),
    # The shipped model grown to 12 blocks (8.0 M parameters; each block followed by an identity copy,
    # model.init_expand_depth), trained on as "ft": a larger DiT that starts where the shipped one is.
    "deep": (VIDEO, [f"model.init={SHIPPED}", "model.init_expand_depth=true", "model.dit.num_layers=12",
                     "train.lr=3e-4", "train.warmup_steps=300", "train.min_lr_ratio=0.05"]),
    # A 2x wider-and-deeper DiT (9.1 M parameters) from scratch with the same terms.
    "big": (VIDEO, ["model.dit.dim=256", "model.dit.num_layers=8", "model.dit.num_heads=8", "model.dit.ffn_dim=1024",
                    "train.lr=8e-4", "train.warmup_steps=500", "train.min_lr_ratio=0.05"]),
    # The shipped per-frame baseline given the same kind of stretch as "ft" (comparable budgets).
    "pf": (PER_FRAME, ["model.init=src/vidiff/assets/world-per-frame", "train.lr=3e-4", "train.warmup_steps=300",
                       "train.min_lr_ratio=0.05"]),
}


def vidiff(*args: str, recipe: str = VIDEO) -> list[str]:
    return [sys.executable, "-m", "vidiff", "train", recipe, *args]


def variant(name: str, *args: str) -> list[str]:
    """The `vidiff train` command of a variant: its recipe, `args`, then its overrides."""
    recipe, overrides = VARIANTS[name]
    return vidiff(*args, *overrides, recipe=recipe)


def common(a: argparse.Namespace) -> list[str]:
    return [
        f"vae.path={SHIPPED}/vae", f"data.cache_dir={a.out}/latents", f"data.cache_clips={a.clips}",
        f"data.cache_workers={a.cache_workers}", "data.cache_batch_size=256", "data.cache_in_memory=true",
        f"data.num_workers={a.loader_workers}", f"data.batch_size={a.batch}", f"train.device={a.device}",
        "train.precision=bf16", "train.progress=false", "train.plot=false", "train.validate_every=0",
        "train.log_every=25", "train.checkpoint_every=2000", *RECIPE_TERMS,
    ]


def launch(cmd: list[str], log: Path) -> subprocess.Popen:
    print("$", " ".join(cmd), f"> {log}", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)


def finish(procs: dict[str, subprocess.Popen], deadline: float) -> dict[str, int]:
    """Wait for every process; past `deadline` send SIGTERM (the trainer saves and stops), then
    SIGKILL a minute later."""
    codes = {}
    for name, p in procs.items():
        try:
            codes[name] = p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            print(f"{name}: past the time limit, SIGTERM", flush=True)
            p.send_signal(signal.SIGTERM)
            try:
                codes[name] = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = p.wait()
    return codes


def steps_per_s(run_dir: Path) -> float:
    """The median steps/s of a run's logged windows after the first (which holds start-up)."""
    from vidiff.train.logging import read_jsonl

    rates = [r["steps_per_s"] for r in read_jsonl(run_dir / "log.jsonl") if "steps_per_s" in r]
    rates = sorted(rates[1:] or rates)
    return rates[len(rates) // 2]


def calibrate(a: argparse.Namespace, names: list[str], out: Path) -> dict[str, float]:
    """Train every variant `a.calib_steps` steps at once; their steps/s (failed ones left out)."""
    runs = {}
    for n in names:
        folder = out / f"calib-{n}"
        if folder.is_dir():
            shutil.rmtree(folder)
        runs[n] = launch(variant(n, "--no-export", f"out_dir={folder}", f"train.steps={a.calib_steps}", *common(a)),
                         out / f"calib-{n}.log")
    codes = finish(runs, time.time() + 300)
    rates = {}
    for n in names:
        if codes[n] == 0:
            rates[n] = steps_per_s(out / f"calib-{n}")
        else:
            print(f"{n}: calibration failed ({codes[n]}); tail of its log:\n"
                  + "\n".join((out / f"calib-{n}.log").read_text().splitlines()[-30:]), flush=True)
    return rates


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/device", help="folder for the cache, the runs and their exports")
    p.add_argument("--budget", type=float, default=420, help="seconds of training per variant (all run at once)")
    p.add_argument("--total", type=float, default=0,
                   help="seconds the whole script may take; the training budget shrinks to fit (0: no limit)")
    p.add_argument("--clips", type=int, default=65536, help="world clips in the latent cache")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default="cuda")
    p.add_argument("--variants", default="ft,deep", help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--calib-steps", type=int, default=150)
    p.add_argument("--cache-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--loader-workers", type=int, default=4)
    a = p.parse_args()
    out = Path(a.out)
    names = a.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant {unknown[0]!r} (known: {', '.join(VARIANTS)})")
    report: dict = {"args": vars(a), "variants": {n: VARIANTS[n] for n in names}}
    t0 = time.time()

    from vidiff.machine import machine_info
    from vidiff.train.logging import read_jsonl

    report["machine"] = machine_info(a.device)
    code = subprocess.call(vidiff("--cache-only", f"out_dir={out}/cache-run", *common(a)))
    if code and a.cache_workers:  # e.g. too little shared memory for the workers' batches
        a.cache_workers, a.clips = 0, min(a.clips, 16384)
        print(f"latent cache failed ({code}); again in this process with {a.clips} clips", flush=True)
        code = subprocess.call(vidiff("--cache-only", f"out_dir={out}/cache-run", *common(a)))
    report["cache_s"] = round(time.time() - t0, 1)
    if code:
        print(f"latent cache failed ({code})", flush=True)
        return code

    t1 = time.time()
    rates = calibrate(a, names, out)
    if not rates and a.loader_workers:
        a.loader_workers = 0
        print("every calibration failed; again without DataLoader workers", flush=True)
        rates = calibrate(a, names, out)
    report["calibration_s"] = round(time.time() - t1, 1)
    report["calibration_steps_per_s"] = rates
    if not rates:
        return 1

    t2 = time.time()
    if a.total:  # leave time for the hard stop's grace (10% + 15 s) and the exports (20 s)
        a.budget = max(30.0, min(a.budget, ((t0 + a.total - t2) - 20 - 15) / 1.1))
    report["budget_s"] = round(a.budget, 1)
    steps = {n: max(10, int(r * a.budget) // 10 * 10) for n, r in rates.items()}
    report["steps"] = steps
    runs = {n: launch(variant(n, f"out_dir={out}/{n}", f"train.steps={s}", *common(a)), out / f"{n}.log")
            for n, s in steps.items()}
    codes = finish(runs, t2 + a.budget * 1.1 + 15)
    report["train_s"] = round(time.time() - t2, 1)
    report["exit_codes"] = codes
    for n, c in codes.items():
        if c != 0 and (out / n).is_dir():  # stopped early: export the checkpoint it saved on SIGTERM
            subprocess.call(variant(n, f"out_dir={out}/{n}", *common(a), "--export", f"{out}/{n}/export"))
        report.setdefault("final", {})[n] = (read_jsonl(out / n / "log.jsonl") or [{}])[-1]
    report["total_s"] = round(time.time() - t0, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2), flush=True)
    return 0



if __name__ == "__main__":
    sys.exit(main())

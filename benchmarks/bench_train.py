"""Training throughput of the world recipes on CPU, and the data loaders beside them.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train.py [--steps 4] [--threads 1]

For each recipe in configs/ (world_vae, world_dit, world_unet, world_per_frame), at its
configured batch size, in a fresh subprocess:
  * builds the model exactly as `vidiff train` does (the diffusion recipes use random normalised
    latents of the world VAE's latent shape: no trained VAE is needed to time a step);
  * runs the task's real loss (`make_vae_loss` / `make_diffusion_loss`) + backward + grad clip +
    AdamW step, one warm-up step then `--steps` timed ones: median wall and CPU seconds per step,
    clips/s and tokens/s (tokens: the DiT's patches; latent positions for the UNet; latent
    positions for the VAE);
  * peak memory: VmHWM after the steps (peak reset via /proc/self/clear_refs after building)
    minus VmRSS before them, and the process's VmHWM.
Beside each, the loader that feeds that recipe is timed alone (clips/s): world clips rendered
on the fly (`SeededBatchStream` + `world_batch`) for the VAE, `ResumableLoader` over a latent
cache (built here from random latents) for the diffusion recipes. `loader_over_trainer` is the
ratio of the two rates: far above 1 means data loading is not the bottleneck.
Writes benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from _memory import reset_peak_rss, status_kb

from vidiff.machine import machine_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "train.json")
RECIPES = ("world_vae", "world_dit", "world_unet", "world_per_frame")


def _setup(name: str):
    """(model, loss_fn, make_batch(g), clips per batch, tokens per clip, make_loader())."""
    import torch

    from vidiff.models.vae import CausalVAE3D
    from vidiff.train.recipe import load_recipe

    cfg = load_recipe(os.path.join(ROOT, "configs", f"{name}.toml"), ["vae.path=unused"])
    d = cfg.data
    torch.manual_seed(0)
    vae_cfg = cfg.vae.vae_config()
    probe = CausalVAE3D(vae_cfg)
    latent_shape = probe.latent_shape(d.frames, d.size, d.size)
    if cfg.task == "vae":
        from vidiff.data.loader import SeededBatchStream
        from vidiff.train.vae_task import build_vae, make_vae_loss, world_clip_batch

        make = world_clip_batch(cfg, d.batch_size)
        tokens = latent_shape[1] * latent_shape[2] * latent_shape[3]

        def loader():
            return SeededBatchStream(make, seed=0)

        return build_vae(cfg), make_vae_loss(cfg), lambda g: make(g, 0), d.batch_size, tokens, loader
    from vidiff.train.diffusion_task import build_diffusion_model, make_diffusion_loss
    from vidiff.world import world_batch

    model = build_diffusion_model(cfg, vae_cfg.z_dim)
    c, fz, hz, wz = latent_shape
    if cfg.model.kind == "dit":
        pt, ph, pw = model.denoiser.config.patch_size
        tokens = (fz // pt) * (hz // ph) * (wz // pw)
    else:
        tokens = fz * hz * wz
    captions = world_batch(range(d.batch_size), frames=2, size=8)[1]

    def make_batch(g):
        return {"latents": torch.randn(d.batch_size, c, fz, hz, wz, generator=g), "caption": captions}

    def loader():
        from vidiff.data.latent_cache import build_latent_cache
        from vidiff.train.diffusion_task import diffusion_data

        root = os.path.join(tempfile.mkdtemp(prefix="bench-train-"), "latents")
        samples = ({"video": torch.zeros(1), "caption": captions[i % len(captions)]} for i in range(512))
        gen = torch.Generator().manual_seed(0)
        build_latent_cache(samples, lambda v: torch.randn(v.shape[0], c, fz, hz, wz, generator=gen), root,
                           encoder_key="bench", batch_size=64, shard_size=256)
        return diffusion_data(cfg, root)

    return model, make_diffusion_loss(cfg), make_batch, d.batch_size, tokens, loader


def measure(name: str, steps: int) -> dict:
    """One recipe, in this (fresh) process."""
    import torch

    model, loss_fn, make_batch, batch, tokens, make_loader = _setup(name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    batches = [make_batch(g) for _ in range(steps + 1)]

    def step(b):
        loss = loss_fn(model, b, g)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    step(batches[0])  # warm-up (allocator, optimizer state)
    base = status_kb("VmRSS")
    reset = reset_peak_rss()
    wall, cpu = [], []
    for b in batches[1:]:
        w0, c0 = time.perf_counter(), time.process_time()
        step(b)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    peak = status_kb("VmHWM")
    step_s = statistics.median(wall)

    loader = make_loader()
    it = iter(loader)
    next(it)
    n_batches = 5
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    loader_clips_s = n_batches * batch / (time.perf_counter() - t0)
    return {
        "recipe": name, "batch_size": batch, "tokens_per_clip": tokens,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "step_wall_s": step_s, "step_cpu_s": statistics.median(cpu), "steps_timed": steps,
        "clips_per_s": batch / step_s, "tokens_per_s": batch * tokens / step_s,
        "peak_growth_mb": (peak - base) / 1024 if reset else None, "peak_rss_mb": peak / 1024,
        "loader_clips_per_s": loader_clips_s, "loader_over_trainer": loader_clips_s / (batch / step_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per recipe (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(measure(args.child, args.steps)))
        return
    rows = []
    for name in args.recipes:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=False,
                             env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if out.returncode:
            raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{name:16s} batch {r['batch_size']:2d}  {r['step_wall_s']:6.2f} s/step (cpu {r['step_cpu_s']:5.2f})  "
              f"{r['clips_per_s']:6.2f} clips/s  {r['tokens_per_s']:8.0f} tokens/s  "
              f"peak +{r['peak_growth_mb'] or float('nan'):6.0f} MB  loader {r['loader_clips_per_s']:7.1f} clips/s "
              f"({r['loader_over_trainer']:.0f}x)", flush=True)
    result = {"machine": machine_info(), "method": __doc__.split("Writes")[0].strip(), "rows": rows}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    from vidiff.modelio import write_json

    write_json(RESULTS, result)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

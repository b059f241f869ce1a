"""VAE benchmark: memory of chunked vs whole-clip coding as clips grow, and world-VAE throughput.

Memory: each point runs in a fresh subprocess (so allocator caches of one point cannot hide
another's peak) and reports the growth of peak RSS (ru_maxrss) during one encode or decode,
beyond what the model and the input already held. Throughput: medians of several runs in this
process, chunked vs whole clip, with their ratio.

    python benchmarks/bench_vae.py [--quick] [--size 256]

Writes benchmarks/results/vae.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from vidiff.machine import machine_info
from vidiff.models.vae import CausalVAE3D, VAEConfig, count_parameters

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "vae.json")


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_point(op: str, mode: str, frames: int, size: int) -> dict:
    """One measurement, meant to run alone in its process."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    vae = CausalVAE3D(VAEConfig.world()).eval()
    chunked = mode == "chunked"
    with torch.inference_mode():
        # warm-up on one frame: one-time allocations (oneDNN primitives, thread pools) are not
        # part of the per-frame cost being measured
        z_dim, latent_frames, h, w = vae.latent_shape(frames, size, size)
        vae.decode(torch.randn(1, z_dim, 1, h, w))
        vae.encode(torch.zeros(1, 3, 1, size, size))
        if op == "decode":
            z = torch.randn(1, z_dim, latent_frames, h, w)
            before = _peak_rss_mb()
            t = time.perf_counter()
            out = vae.decode(z, chunked=chunked)
        else:
            x = torch.rand(1, 3, frames, size, size) * 2 - 1
            before = _peak_rss_mb()
            t = time.perf_counter()
            out = vae.encode(x, chunked=chunked).mean
        seconds = time.perf_counter() - t
    return {"op": op, "mode": mode, "frames": frames, "size": size, "peak_growth_mb": _peak_rss_mb() - before,
            "output_mb": out.numel() * out.element_size() / 2**20, "seconds": seconds}


def run_memory(frames_list: list[int], size: int) -> list[dict]:
    rows = []
    for op in ("decode", "encode"):
        for frames in frames_list:
            for mode in ("chunked", "whole"):
                cmd = [sys.executable, os.path.abspath(__file__), "--point", op, mode, str(frames), str(size)]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
                row = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"  {op:6s} {mode:7s} {frames:3d} frames {size}x{size}: peak +{row['peak_growth_mb']:7.1f} MB "
                      f"(output {row['output_mb']:5.1f} MB) {row['seconds']:6.2f} s", flush=True)
    return rows


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_throughput(repeats: int, batch: int) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = VAEConfig.world()
    vae = CausalVAE3D(cfg).eval()
    x = torch.rand(batch, 3, 17, 64, 64) * 2 - 1
    out = {"config": cfg.to_dict(), "parameters": count_parameters(vae), "clip": [17, 64, 64], "batch": batch,
           "latent_shape": list(vae.latent_shape(17, 64, 64))}
    with torch.inference_mode():
        z = vae.encode(x).mode()
        for name, fn in {
            "encode_chunked": lambda: vae.encode(x),
            "encode_whole": lambda: vae.encode(x, chunked=False),
            "decode_chunked": lambda: vae.decode(z),
            "decode_whole": lambda: vae.decode(z, chunked=False),
        }.items():
            out[name + "_clips_per_s"] = batch / _median_time(fn, repeats)
    vae.train()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-4)

    def step():
        recon, post = vae(x)
        loss = (recon - x).abs().mean() + 1e-3 * post.kl().mean() / x[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()

    out["train_step_clips_per_s"] = batch / _median_time(step, max(2, repeats // 2))
    out["encode_chunked_over_whole_time"] = out["encode_whole_clips_per_s"] / out["encode_chunked_clips_per_s"]
    out["decode_chunked_over_whole_time"] = out["decode_whole_clips_per_s"] / out["decode_chunked_clips_per_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats")
    parser.add_argument("--size", type=int, default=256,
                        help="frame size of the memory points (the world VAE's activations at 128x128 are too "
                             "small for the clip length to show above allocator noise)")
    parser.add_argument("--point", nargs=4, metavar=("OP", "MODE", "FRAMES", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        op, mode, frames, size = args.point
        print(json.dumps(memory_point(op, mode, int(frames), int(size))))
        return

    frames_list = [9, 17, 33] if args.quick else [9, 17, 33, 65]
    size = args.size
    print(f"memory: world VAE, {size}x{size}, peak RSS growth per call (fresh process each)")
    memory = run_memory(frames_list, size)
    print("throughput: world VAE, 17x64x64 clips, 1 thread, median")
    throughput = run_throughput(repeats=3 if args.quick else 5, batch=2)
    for k, v in throughput.items():
        if k.endswith("per_s") or k.endswith("_time"):
            print(f"  {k:34s} {v:8.3f}")
    print(f"  parameters {throughput['parameters']:,}, latent {throughput['latent_shape']}")

    def growth(op, mode):
        pts = [r for r in memory if r["op"] == op and r["mode"] == mode]
        return pts[-1]["peak_growth_mb"] / max(pts[0]["peak_growth_mb"], 1e-9)

    summary = {f"{op}_{mode}_peak_growth_ratio_{frames_list[-1]}_vs_{frames_list[0]}_frames": growth(op, mode)
               for op in ("decode", "encode") for mode in ("chunked", "whole")}
    for k, v in summary.items():
        print(f"  {k:48s} {v:6.2f}x")
    result = {
        "machine": machine_info(),
        "memory": memory,
        "memory_summary": summary,
        "throughput": throughput,
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    from vidiff.modelio import write_json

    write_json(RESULTS, result)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

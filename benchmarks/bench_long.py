"""Long videos: sliding windows vs one pass over all frames — time and peak memory vs length.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_long.py   (about 2-4 minutes on 1 core)
     add --quick for 17/33/65 frames only, --device cuda to measure on a GPU.

Model: a tiny-but-real random pipeline at the world model's shapes: the world VAE
(`VAEConfig.world()`, random weights) at 64x64, and a VideoDiT with full attention (dim 192,
6 heads, 4 layers, patch (1, 2, 2)), built-in text encoder; Euler, 4 steps, guidance 1 (one
forward per step). Windows are the 17-frame clip's latent length with an overlap of 2 latent
frames (the JSON records the VAE's factors and the window in latent frames).

Methods compared, for 17, 33, 65, 129 and 257 frames:
  window   `iter_windows(mode="window")`, frames consumed chunk by chunk (as a streaming writer
           would), latents decoded incrementally
  fuse     `iter_windows(mode="fuse")`
  onepass  `VideoPipeline.__call__(num_frames=N)`: the DiT sees all N latent frames at once
           (far outside what the model was trained on; here only its cost matters)

Time: median of RUNS runs, the methods alternated in one process, as process CPU time (one
intra-op thread, so CPU time is compute time even when the machine is shared, which inflates
wall time; wall time is reported too); ratios are taken against onepass at the same length.
Peak memory (CPU): a fresh subprocess per (method, length) builds the pipeline, warms it up on a
17-frame clip, records its current RSS (/proc/self/status VmRSS), resets the kernel's peak-RSS
mark (write 5 to /proc/self/clear_refs), generates once, and reports the new peak (VmHWM) minus
that baseline: the extra resident memory generation needed, allocator behaviour included (noisy
by a few MB; tracemalloc cannot see torch's allocations). On CUDA the same subprocess reports
`torch.cuda.max_memory_allocated` after a reset (exact allocator peak).
`max_model_frames`: the most latent frames the DiT received in one call (a spy), the reason the
windowed memory does not grow.
Writes benchmarks/results/long.json (long_cuda.json with --device cuda).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import torch
from _memory import reset_peak_rss, status_kb

from vidiff.machine import machine_info

FRAMES = (17, 33, 65, 129, 257)
METHODS = ("window", "fuse", "onepass")
RUNS = 5
STEPS = 4
WINDOW, OVERLAP = None, 2  # window None: the clip length of the pipeline (17 frames) in latent frames
PROMPT = "a large red circle moves right on a black background"
HERE = os.path.dirname(os.path.abspath(__file__))


def build(device: str = "cpu"):
    from vidiff.models.dit import DiTConfig, VideoDiT
    from vidiff.models.text import BuiltinTextEncoder
    from vidiff.models.vae import CausalVAE3D, VAEConfig
    from vidiff.pipelines import PipelineConfig, SchedulerConfig, VideoPipeline

    torch.manual_seed(0)
    vae = CausalVAE3D(VAEConfig.world())
    text = BuiltinTextEncoder.create(dim=32, depth=1)
    z = vae.z_dim
    dit = VideoDiT(DiTConfig(in_channels=z, out_channels=z, patch_size=(1, 2, 2), dim=192, num_heads=6, num_layers=4,
                             ffn_dim=512, text_dim=32, attention="full"))
    torch.nn.init.normal_(dit.proj_out.weight, 0, 0.02)  # a fresh head predicts 0; make it real
    sch = SchedulerConfig(num_inference_steps=STEPS, guidance_scale=1.0)
    return VideoPipeline(dit.eval(), vae.eval(), text.eval(), sch, PipelineConfig(num_frames=17, height=64, width=64)).to(device)


def generate(pipe, method: str, frames: int) -> int:
    """Run one generation; returns the number of frames produced (frames are dropped as they come)."""
    from vidiff.pipelines.long import iter_windows

    if method == "onepass":
        return pipe(PROMPT, num_frames=frames, progress=False).frames.shape[0]
    n = 0
    for chunk in iter_windows(pipe, PROMPT, num_frames=frames, window=WINDOW, overlap=OVERLAP, mode=method):
        n += chunk.frames.shape[0]
    return n


def max_model_frames(pipe, method: str, frames: int) -> int:
    seen = []
    orig = pipe.transformer.forward
    pipe.transformer.forward = lambda x, t, c=None: seen.append(x.shape[2]) or orig(x, t, c)
    try:
        generate(pipe, method, frames)
    finally:
        del pipe.transformer.forward
    return max(seen)


def memory_worker(method: str, frames: int, device: str) -> None:
    torch.set_num_threads(1)
    with torch.no_grad():
        pipe = build(device)
        generate(pipe, method, 17)  # warm-up: lazy allocations, kernel caches
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            n = generate(pipe, method, frames)
            torch.cuda.synchronize()
            out = {"delta_mb": (torch.cuda.max_memory_allocated() - base) / 2**20, "method": "cuda.max_memory_allocated"}
        else:
            base = status_kb("VmRSS")
            reset = reset_peak_rss()
            n = generate(pipe, method, frames)
            out = {"delta_mb": (status_kb("VmHWM") - base) / 1024, "peak_reset": reset, "method": "VmHWM - VmRSS"}
    out["frames_out"] = n
    print(json.dumps(out))


def measure_memory(method: str, frames: int, device: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory", method, str(frames), device],
                         capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"memory worker {method} {frames} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def linear_fit(xs, ys) -> dict:
    """Least squares y ~ a + b x and the largest relative residual (how linear the times are)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    worst = max(abs(y - (a + b * x)) / y for x, y in zip(xs, ys))
    return {"intercept_s": a, "slope_s_per_frame": b, "max_rel_residual": worst}


def main() -> None:
    quick = "--quick" in sys.argv
    device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cpu"
    frames_list = FRAMES[:3] if quick else FRAMES
    torch.set_num_threads(1)
    pipe = build(device)
    with torch.no_grad():
        for m in METHODS:
            generate(pipe, m, 17)
        times: dict = {m: {} for m in METHODS}
        wall_times: dict = {m: {} for m in METHODS}
        for frames in frames_list:
            samples = {m: [] for m in METHODS}
            walls = {m: [] for m in METHODS}
            for _ in range(RUNS):
                for m in METHODS:
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t0, c0 = time.perf_counter(), time.process_time()
                    generate(pipe, m, frames)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    walls[m].append(time.perf_counter() - t0)
                    # on CUDA the host CPU time would miss the GPU's work: use wall time there
                    samples[m].append(walls[m][-1] if device == "cuda" else time.process_time() - c0)
            for m in METHODS:
                times[m][frames] = statistics.median(samples[m])
                wall_times[m][frames] = statistics.median(walls[m])
            print(f"timed {frames} frames: " + ", ".join(f"{m} {times[m][frames]:.2f}s" for m in METHODS), flush=True)
        bound = {m: max_model_frames(pipe, m, 65) for m in METHODS}
    memory = {m: {f: measure_memory(m, f, device) for f in frames_list} for m in METHODS}

    rows = []
    print(f"\n{'frames':>6} | {'method':>7} | {'cpu s':>7} | {'x onepass':>9} | {'s/frame':>8} | {'peak extra MB':>13}")
    for frames in frames_list:
        for m in METHODS:
            t = times[m][frames]
            row = {"frames": frames, "method": m, "time_s": t, "wall_s": wall_times[m][frames],
                   "time_vs_onepass": t / times["onepass"][frames],
                   "seconds_per_frame": t / frames, "peak_extra_mb": memory[m][frames]["delta_mb"]}
            rows.append(row)
            print(f"{frames:>6} | {m:>7} | {t:7.2f} | {row['time_vs_onepass']:9.2f} | {t / frames:8.4f} | "
                  f"{row['peak_extra_mb']:13.1f}")
    fits = {m: linear_fit(list(frames_list), [times[m][f] for f in frames_list]) for m in METHODS}
    mem_growth = {m: memory[m][frames_list[-1]]["delta_mb"] - memory[m][frames_list[0]]["delta_mb"] for m in METHODS}
    print("\nlinear fit of time vs frames (max relative residual):",
          ", ".join(f"{m} {fits[m]['max_rel_residual']:.1%}" for m in METHODS))
    print(f"peak extra memory, {frames_list[-1]} frames minus {frames_list[0]} frames:",
          ", ".join(f"{m} {mem_growth[m]:+.1f} MB" for m in METHODS))
    print("max latent frames per DiT call:", bound)
    result = {
        "machine": machine_info(device),
        "config": {"vae": "VAEConfig.world() random", "vae_factors": {"time": pipe.vae.temporal_factor,
                   "space": pipe.vae.spatial_factor, "z_dim": pipe.vae.z_dim},
                   "window_latent_frames_resolved": pipe.vae.latent_num_frames(17), "size": [64, 64], "dit": "dim 192, 6 heads, 4 layers, ffn 512, full attention",
                   "steps": STEPS, "guidance": 1.0, "window_latent_frames": WINDOW, "overlap_latent_frames": OVERLAP,
                   "runs": RUNS, "memory_method": memory["window"][frames_list[0]]["method"]},
        "rows": rows,
        "time_linear_fit": fits,
        "peak_extra_mb_last_minus_first": mem_growth,
        "max_model_latent_frames_per_call": bound,
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "long.json" if device == "cpu" else f"long_{device}.json")
    from vidiff.modelio import write_json

    write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory":
        memory_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()

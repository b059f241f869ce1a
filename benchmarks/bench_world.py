"""Shapes-world speed: rendering and ground-truth evaluation clips per second on one thread.

Targets: render >= 200 clips/s and world-eval >= 50 clips/s of 17x64x64 on one core. Peer runs in
the same process: batched rendering vs one clip at a time, and rendering with vs without the
ground truth. Writes benchmarks/results/world.json.

    OMP_NUM_THREADS=1 python benchmarks/bench_world.py
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from vidiff.machine import machine_info  # noqa: E402
from vidiff.metrics.world import evaluate_video  # noqa: E402
from vidiff.world.render import render, render_batch  # noqa: E402
from vidiff.world.scene import caption, sample_scene  # noqa: E402

BATCH, RUNS = 64, 5


def _rates(jobs: dict, runs: int = RUNS) -> dict:
    """Clips per second of each ``name: (fn, count)``, median over ``runs`` rounds; the jobs are
    interleaved round by round so that a change in machine load hits them all alike."""
    times = {name: [] for name in jobs}
    for _ in range(runs):
        for name, (fn, _) in jobs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: jobs[name][1] / statistics.median(t) for name, t in times.items()}


def main() -> int:
    torch.set_num_threads(1)
    scenes = [sample_scene(seed, split="any") for seed in range(BATCH)]
    render_batch(scenes, with_truth=False)  # warm up
    video, _ = render_batch(scenes, with_truth=False)
    caps = [caption(s) for s in scenes]
    results = _rates({
        "render_batch_clips_per_s": (lambda: render_batch(scenes, with_truth=False), BATCH),
        "render_batch_with_truth_clips_per_s": (lambda: render_batch(scenes, with_truth=True), BATCH),
        "render_single_clips_per_s": (lambda: [render(s) for s in scenes], BATCH),
        "sample_scene_per_s": (lambda: [sample_scene(s) for s in range(BATCH)], BATCH),
        "world_eval_clips_per_s": (lambda: [evaluate_video(v, c) for v, c in zip(video, caps)], BATCH),
    })
    results["batch_vs_single_render_ratio"] = results["render_batch_clips_per_s"] / results["render_single_clips_per_s"]
    results["truth_overhead_ratio"] = results["render_batch_clips_per_s"] / results["render_batch_with_truth_clips_per_s"]
    targets = {"render_batch_clips_per_s": 200.0, "world_eval_clips_per_s": 50.0}
    report = {
        "clip": {"frames": 17, "size": 64, "batch": BATCH, "runs": RUNS, "statistic": "median"},
        "results": results,
        "targets": targets,
        "meets_targets": {k: results[k] >= v for k, v in targets.items()},
        "machine": machine_info(),
    }
    print(f"{'measure':<40}{'value':>12}")
    for key, value in results.items():
        target = f"  (target >= {targets[key]:.0f})" if key in targets else ""
        print(f"{key:<40}{value:>12.1f}{target}")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "world.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    from vidiff.modelio import write_json

    write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

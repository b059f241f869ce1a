"""What each long-video mode costs on the shipped world model: sliding windows, fused windows and
keyframes, each at its defaults, for one caption at 129 frames (8x the training length).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_long_modes.py   (about 1 minute on 1 core)

Time: median of RUNS runs of `generate_long(pipe, CAPTION, num_frames=129, mode=...)`, the modes
alternated in one process, as process CPU time with one intra-op thread (wall time too); ratios
against sliding windows. `windows`: the final video's windows (`LongOutput.windows`; for keyframes
the gaps, after one keyframe pass). Quality of the same modes: `benchmarks/eval_long.py` (README,
"Long videos").
Writes benchmarks/results/long_modes.json.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from vidiff.machine import machine_info

MODES = ("window", "fuse", "keyframes")
RUNS = 3
FRAMES = 129
CAPTION = "a large red circle stays still on a black background"
MODEL = "src/vidiff/assets/world-dit"
HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    from vidiff.modelio import write_json
    from vidiff.pipelines import VideoPipeline
    from vidiff.pipelines.long import generate_long

    torch.set_num_threads(1)
    pipe = VideoPipeline.from_pretrained(MODEL)
    cpu = {m: [] for m in MODES}
    wall = {m: [] for m in MODES}
    windows = {}
    for _ in range(RUNS):
        for mode in MODES:
            t0, w0 = time.process_time(), time.perf_counter()
            out = generate_long(pipe, CAPTION, num_frames=FRAMES, mode=mode, seed=0)
            cpu[mode].append(time.process_time() - t0)
            wall[mode].append(time.perf_counter() - w0)
            windows[mode] = len(out.windows)
    base = statistics.median(cpu["window"])
    rows = [{"mode": m, "cpu_s": statistics.median(cpu[m]), "wall_s": statistics.median(wall[m]),
             "cpu_vs_window": statistics.median(cpu[m]) / base, "windows": windows[m], "runs_cpu_s": cpu[m]}
            for m in MODES]
    for r in rows:
        print(f"{r['mode']:>9}: {r['cpu_s']:.2f} s CPU ({r['cpu_vs_window']:.2f}x sliding windows), "
              f"{r['windows']} windows")
    path = os.path.join(HERE, "results", "long_modes.json")
    write_json(path, {"machine": machine_info("cpu"), "command": "OMP_NUM_THREADS=1 python benchmarks/bench_long_modes.py",
                      "model": MODEL, "caption": CAPTION, "frames": FRAMES, "runs": RUNS, "rows": rows})
    print("wrote", path)


if __name__ == "__main__":
    main()

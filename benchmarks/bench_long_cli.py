"""`vidiff generate` on long videos: peak memory and time vs length, streamed vs held.

Run: .venv/bin/python benchmarks/bench_long_cli.py                (about 6 minutes on 2 cores)
     .venv/bin/python benchmarks/bench_long_cli.py --format gif   (the same, writing GIFs)
     add --quick for 129 and 257 frames, one run each.

On the shipped world model (sliding windows, its defaults), for 129, 257, 513 and 1025 frames:
  stream   `vidiff generate --frames N` as it is now: each window's frames go to the encoder
           (H.264 or GIF) as soon as they are final (`vidiff.video.VideoWriter`), and the contact
           sheet keeps at most 64 of them
  hold     what `vidiff generate` did before: `generate_long` (all latents, decoded in one VAE
           call), then `write_video` and a contact sheet of every frame

Each run is a fresh process (one intra-op thread, so the two methods can be compared on a shared
machine); it reports its peak resident set size (VmHWM, model and libraries included) and the
wall time from after the model is loaded to the file written. Medians over RUNS runs, the methods
alternated. Growth: the peak at the longest video minus the peak at 129 frames.
Writes benchmarks/results/long_cli.json (mp4) or long_cli_gif.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(os.path.dirname(HERE), "src", "vidiff", "assets", "world-dit")
PROMPT = "a large red circle bounces on a black background"
FRAMES = (129, 257, 513, 1025)
METHODS = ("stream", "hold")
RUNS = 3

WORKER = r"""
import json, sys, time
import torch
from _memory import status_kb
torch.set_num_threads(1)
method, frames, model, prompt, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
if method == "stream":
    from unittest import mock
    from vidiff.cli import generate, main
    loaded = {}
    real_load = generate.load_pipeline
    def load(*args, **kwargs):
        pipe = real_load(*args, **kwargs)
        loaded["t"] = time.perf_counter()
        return pipe
    with mock.patch.object(generate, "load_pipeline", load):
        assert main(["generate", prompt, "--model", model, "--frames", str(frames), "--out", out]) == 0
    seconds = time.perf_counter() - loaded["t"]
else:
    from vidiff.contact_sheet import contact_sheet
    from vidiff.pipelines import VideoPipeline
    from vidiff.pipelines.long import generate_long
    from vidiff.video import write_video
    pipe = VideoPipeline.from_pretrained(model)
    t0 = time.perf_counter()
    video = generate_long(pipe, prompt, num_frames=frames)
    write_video(out, video.frames, fps=pipe.config.fps)
    contact_sheet(video.frames, out[:-4] + "_sheet.png")
    seconds = time.perf_counter() - t0
print(json.dumps({"peak_rss_mb": status_kb("VmHWM") / 1024, "seconds": seconds}))
"""


def run_once(method: str, frames: int, folder: str, suffix: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=HERE)
    out = os.path.join(folder, f"{method}_{frames}.{suffix}")
    res = subprocess.run([sys.executable, "-c", WORKER, method, str(frames), MODEL, PROMPT, out],
                         capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"{method} at {frames} frames failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    from vidiff.machine import machine_info
    from vidiff.modelio import write_json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=("mp4", "gif"), default="mp4", help="the video file written")
    parser.add_argument("--quick", action="store_true", help="129 and 257 frames, one run each; no JSON")
    args = parser.parse_args()
    quick = args.quick
    frames_list, runs = (FRAMES[:2], 1) if quick else (FRAMES, RUNS)
    samples = {(m, f): [] for m in METHODS for f in frames_list}
    with tempfile.TemporaryDirectory() as folder:
        for frames in frames_list:
            for _ in range(runs):
                for m in METHODS:
                    samples[m, frames].append(run_once(m, frames, folder, args.format))
            print(f"{frames} frames: " + ", ".join(
                f"{m} {statistics.median(s['peak_rss_mb'] for s in samples[m, frames]):.0f} MB "
                f"{statistics.median(s['seconds'] for s in samples[m, frames]):.1f} s" for m in METHODS), flush=True)
    rows = [{"frames": f, "method": m, "runs": len(samples[m, f]),
             "peak_rss_mb": statistics.median(s["peak_rss_mb"] for s in samples[m, f]),
             "seconds": statistics.median(s["seconds"] for s in samples[m, f])}
            for f in frames_list for m in METHODS]
    peak = {(r["method"], r["frames"]): r["peak_rss_mb"] for r in rows}
    growth = {m: peak[m, frames_list[-1]] - peak[m, frames_list[0]] for m in METHODS}
    print(f"peak RSS growth from {frames_list[0]} to {frames_list[-1]} frames: "
          + ", ".join(f"{m} {growth[m]:+.0f} MB" for m in METHODS))
    result = {"machine": machine_info("cpu"), "model": "src/vidiff/assets/world-dit", "prompt": PROMPT, "format": args.format,
              "intra_op_threads": 1, "rows": rows, "peak_rss_growth_mb": growth}
    if not quick:
        name = "long_cli.json" if args.format == "mp4" else f"long_cli_{args.format}.json"
        write_json(os.path.join(HERE, "results", name), result)
        print(f"wrote benchmarks/results/{name}")


if __name__ == "__main__":
    main()

"""`read_video` time: decoding and colour conversion on the calling thread (what vidiff does, so
that no FFmpeg worker thread can hang a forked DataLoader worker) vs FFmpeg's worker threads.

Run: .venv/bin/python benchmarks/bench_read.py     (about a minute on 2 cores)

Clips, written here with `write_video` (H.264, crf 18): 64x64 x 64 frames (the world model's size),
the shared real clip (320x240, if ../shared/data is there) and 1280x720 x 48 frames. Both ways run
in this process, alternated, medians of RUNS reads each. Writes benchmarks/results/read.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from unittest import mock

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_CLIP = os.path.join(os.path.dirname(HERE), "..", "shared", "data", "realshort.mp4")
RUNS = 7


def waves(frames: int, height: int, width: int) -> np.ndarray:
    """Moving colour waves (smooth content, like generated video)."""
    t, y, x = np.ogrid[:frames, :height, :width]
    r = 127 + 100 * np.sin(2 * np.pi * (x / width + t / frames))
    g = 127 + 100 * np.cos(2 * np.pi * (y / height - t / (2 * frames)))
    b = 127 + 60 * np.sin(2 * np.pi * (x + y) / (width + height))
    return np.stack(np.broadcast_arrays(r, g, b), axis=-1).round().astype(np.uint8)


def with_worker_threads(video_module):
    """Patch vidiff.video back to FFmpeg's default threading (auto thread counts)."""
    real_open = video_module._open_video

    def open_threaded(path):
        container, stream = real_open(path)
        stream.codec_context.thread_count = 0
        return container, stream

    return (mock.patch.object(video_module, "_open_video", open_threaded),
            mock.patch.object(video_module, "_NO_WORKER_THREADS", {}))


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    import vidiff.video as V
    from vidiff.machine import machine_info
    from vidiff.modelio import write_json

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        clips = {"64x64x64": waves(64, 64, 64), "1280x720x48": waves(48, 720, 1280)}
        paths = {}
        for name, clip in clips.items():
            paths[name] = V.write_video(os.path.join(folder, f"{name}.mp4"), clip, fps=24)
        if os.path.exists(SHARED_CLIP):
            paths["shared realshort.mp4"] = SHARED_CLIP
        for name, path in paths.items():
            times = {"calling thread": [], "worker threads": []}
            for _ in range(RUNS):
                for way in times:
                    patches = with_worker_threads(V) if way == "worker threads" else ()
                    for p in patches:
                        p.start()
                    try:
                        start = time.perf_counter()
                        frames = V.read_video(path)
                        times[way].append(time.perf_counter() - start)
                    finally:
                        for p in patches:
                            p.stop()
            med = {way: statistics.median(t) for way, t in times.items()}
            rows.append({"clip": name, "frames": len(frames), "size": f"{frames.shape[2]}x{frames.shape[1]}",
                         "runs": RUNS, "seconds": med,
                         "ratio_calling_over_workers": med["calling thread"] / med["worker threads"]})
            print(f"{name}: calling thread {med['calling thread'] * 1000:.1f} ms, worker threads "
                  f"{med['worker threads'] * 1000:.1f} ms (ratio {rows[-1]['ratio_calling_over_workers']:.2f})",
                  flush=True)
    write_json(os.path.join(HERE, "results", "read.json"),
               {"machine": machine_info("cpu", av=V.av.__version__), "command": "python benchmarks/bench_read.py", "rows": rows})
    print("wrote benchmarks/results/read.json")


if __name__ == "__main__":
    sys.exit(main())

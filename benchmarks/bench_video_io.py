"""Two choices of `vidiff.video`, measured against the alternative:

read    `read_video` time with decoding and colour conversion on the calling thread (what vidiff
        does, so that no FFmpeg worker thread can hang a forked DataLoader worker) vs FFmpeg's
        worker threads. Clips written here with `write_video` (H.264, crf 18): 64x64 x 64 frames
        (the world model's size), the shared real clip (320x240, if ../shared/data is there) and
        1280x720 x 48 frames. Both ways in this process, alternated, medians of RUNS reads.
h264    `write_video` at crf 18 with x264's MB-tree rate control off (what vidiff does, so that
        the same frames give the same bytes) vs on (x264's default): distinct files over REPEATS
        writes of the same frames, file size and PSNR of the decoded frames, on the shared real
        clip and three shapes-world clips (33 frames, 64x64).

Run: .venv/bin/python benchmarks/bench_video_io.py     (about a minute on 2 cores)
Writes benchmarks/results/video_io.json.
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
REPEATS = 8


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


def h264_rows(V, clips: dict[str, np.ndarray], folder: str) -> list[dict]:
    """Distinct files, size and PSNR with MB-tree off (vidiff) and on (x264's default)."""
    import hashlib

    rows = []
    for name, clip in clips.items():
        for way, params in (("mbtree off (vidiff)", V._X264_REPRODUCIBLE), ("mbtree on", {})):
            path, digests = os.path.join(folder, "h264.mp4"), set()
            with mock.patch.object(V, "_X264_REPRODUCIBLE", params):
                for _ in range(REPEATS):
                    V.write_video(path, clip, fps=8.0)
                    with open(path, "rb") as f:
                        digests.add(hashlib.md5(f.read()).hexdigest())
            mse = np.mean((V.read_video(path).astype(np.float64) - clip) ** 2)
            rows.append({"clip": name, "way": way, "writes": REPEATS, "distinct_files": len(digests),
                         "bytes": os.path.getsize(path), "psnr_db": float(10 * np.log10(255.0 ** 2 / mse))})
            print(f"h264 {name}, {way}: {len(digests)} distinct of {REPEATS}, {rows[-1]['bytes']} bytes, "
                  f"{rows[-1]['psnr_db']:.2f} dB", flush=True)
    return rows


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    import vidiff.video as V
    from vidiff.machine import machine_info
    from vidiff.modelio import write_json
    from vidiff.world.render import render
    from vidiff.world.scene import sample_scene

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
            print(f"read {name}: calling thread {med['calling thread'] * 1000:.1f} ms, worker threads "
                  f"{med['worker threads'] * 1000:.1f} ms (ratio {rows[-1]['ratio_calling_over_workers']:.2f})",
                  flush=True)
        world = {f"world seed {seed}": render(sample_scene(seed, frames=33))[0]
                 for seed in range(3)}
        real = {"shared realshort.mp4": V.read_video(SHARED_CLIP)} if os.path.exists(SHARED_CLIP) else {}
        h264 = h264_rows(V, {**real, **world}, folder)
    write_json(os.path.join(HERE, "results", "video_io.json"),
               {"machine": machine_info("cpu", av=V.av.__version__), "command": "python benchmarks/bench_video_io.py",
                "read": rows, "h264": h264})
    print("wrote benchmarks/results/video_io.json")


if __name__ == "__main__":
    sys.exit(main())

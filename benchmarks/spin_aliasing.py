"""How much of a spin a latent frame can show: orientation per frame against per VAE chunk.

    python benchmarks/spin_aliasing.py --seeds 96

A causal video VAE with temporal factor `k` codes frame 0 alone and then every `k` frames as one
latent frame. A shape with `n`-fold symmetry looks the same every 360/n degrees, and the world's
"spins" turns an object 150-300 degrees over a 17-frame clip, so from one latent frame to the next
a square (n = 4) turns 37-75 degrees of its 90-degree period. Two measurements on ground-truth
renders of a large white square, triangle and diamond spinning on black (`--seeds` scenes each):

* the shape's orientation moment `|C_n|` (the tracker's rotation-invariant complex moment,
  `metrics/tracker.py`) in single frames and in the mean of each VAE chunk's `k` frames: how much
  of the shape's orientation survives the blur of one chunk (0 = a round blob);
* the share of clips whose turn per latent frame exceeds half the period, `180 / n` degrees: from
  latent frame to latent frame their rotation aliases (looks slower, or reversed).

No model is involved; this is the difficulty the latent sequence poses to any model of the shapes
world on this VAE. Writes JSON (default benchmarks/results/spin_aliasing.json).
"""

from __future__ import annotations

import argparse

import numpy as np
from _probe import write_report

from vidiff.metrics.tracker import SYMMETRY_ORDER
from vidiff.metrics.world import caption_object_track
from vidiff.world.grammar import parse_caption
from vidiff.world.render import render
from vidiff.world.scene import scene_from_caption

SHAPES = ("square", "triangle", "diamond")


def chunk_means(frames: np.ndarray, k: int) -> np.ndarray:
    """uint8 `[1 + (F - 1) // k, H, W, 3]`: frame 0, then the mean of each following `k` frames."""
    rest = frames[1: 1 + (len(frames) - 1) // k * k].astype(np.float64)
    means = rest.reshape(-1, k, *frames.shape[1:]).mean(1)
    return np.concatenate([frames[:1], np.rint(means).astype(np.uint8)])


def measure(shape: str, seeds: int, frames: int, k: int) -> dict:
    """Orientation moment per frame and per chunk mean, and the aliased share, for one shape."""
    caption = f"a large white {shape} spins on a black background"
    spec, n = parse_caption(caption), SYMMETRY_ORDER[shape]
    per_frame, per_chunk, steps = [], [], []
    for seed in range(seeds):
        video, _ = render(scene_from_caption(caption, seed=seed), size=64, frames=frames)
        track = caption_object_track(video, spec)
        per_frame.append(np.abs(track.moments[track.found, n - 2]).mean())
        chunks = caption_object_track(chunk_means(video, k), spec)
        per_chunk.append(np.abs(chunks.moments[chunks.found, n - 2]).mean())
        turn = track.orientation(shape)
        steps.append(abs(turn[-1] - turn[0]) / (frames - 1) * k)
    steps = np.asarray(steps)
    return {"caption": caption, "symmetry_order": n, "moment_per_frame": float(np.mean(per_frame)),
            "moment_per_chunk": float(np.mean(per_chunk)),
            "moment_kept": float(np.mean(per_chunk) / np.mean(per_frame)),
            "turn_per_latent_frame_deg": [float(steps.min()), float(steps.max())],
            "half_period_deg": 180.0 / n, "aliased_share": float((steps > 180.0 / n).mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python benchmarks/spin_aliasing.py --seeds 96")
    parser.add_argument("--seeds", type=int, default=96, help="scenes per shape")
    parser.add_argument("--frames", type=int, default=17, help="clip length (the world model's)")
    parser.add_argument("--temporal-factor", type=int, default=4, help="frames per latent frame (the world VAE's)")
    parser.add_argument("--json", default="benchmarks/results/spin_aliasing.json", help="report path")
    args = parser.parse_args(argv)
    rows = {shape: measure(shape, args.seeds, args.frames, args.temporal_factor) for shape in SHAPES}
    print("| shape | |C_n| per frame | per chunk | kept | turn per latent frame | half period | aliased |")
    for shape, r in rows.items():
        lo, hi = r["turn_per_latent_frame_deg"]
        print(f"| {shape} | {r['moment_per_frame']:.3f} | {r['moment_per_chunk']:.3f} | {r['moment_kept']:.2f} | "
              f"{lo:.0f}-{hi:.0f} deg | {r['half_period_deg']:.0f} deg | {r['aliased_share']:.0%} |")
    write_report(args.json, {"settings": vars(args), "shapes": rows}, "spin_aliasing.py", argv)


if __name__ == "__main__":
    main()

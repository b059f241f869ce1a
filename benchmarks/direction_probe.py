"""Does a shapes-world model's first step already point the way its caption says?

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/direction_probe.py --model src/vidiff/assets/world-dit

Text-to-video starts from pure noise, where the model's x0 prediction is its conditional mean
of all clips that fit the caption. For "moves right" that mean must drift right over the clip
(objects that move right start on the left), whatever the noise. For each direction, each of a
few single-object captions on a black background and `--noises` noise draws, the x0 prediction
at t = 1 (x_t = eps) is decoded and the brightness-weighted centroid of its frames measured:

    drift = centroid(last frame) - centroid(first frame)     along x for left/right, y for up/down

(y grows downwards, so "moves down" should give drift > 0, like "moves right"). A model that
follows the direction word gives opposite signs for the two directions of an axis; one that
ignores it gives the same drift for both. No guidance (the conditional branch). Writes JSON
(default benchmarks/results/direction_probe.json).
"""

from __future__ import annotations

import argparse

import torch
from _probe import load_pipeline, write_report

DIRECTIONS = {"right": (0, +1), "left": (0, -1), "down": (1, +1), "up": (1, -1)}  # (axis: 0 = x, 1 = y; sign)
OBJECTS = ("large red circle", "small green square", "large yellow triangle", "small cyan diamond")


def centroids(video: torch.Tensor) -> torch.Tensor:
    """Brightness-weighted centroid `[B, F, 2]` (x, y as fractions of the frame) of videos
    `[B, 3, F, H, W]` in [-1, 1] on a black background."""
    w = (video + 1).sum(1).clamp(min=0)  # [B, F, H, W]
    h, wd = w.shape[-2:]
    xs = torch.linspace(0, 1, wd).view(1, 1, 1, wd)
    ys = torch.linspace(0, 1, h).view(1, 1, h, 1)
    total = w.sum((-1, -2)).clamp(min=1e-8)
    return torch.stack([(w * xs).sum((-1, -2)) / total, (w * ys).sum((-1, -2)) / total], dim=-1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python benchmarks/direction_probe.py --model src/vidiff/assets/world-dit --noises 8")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped world model)")
    parser.add_argument("--noises", type=int, default=8, help="noise draws per caption (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise draws (default 0)")
    parser.add_argument("--json", default="benchmarks/results/direction_probe.json", help="report path")
    args = parser.parse_args(argv)

    model, pipe = load_pipeline(args.model)
    cfg = pipe.config
    shape = pipe.vae.latent_shape(cfg.num_frames, cfg.height, cfg.width)
    eps = torch.randn((args.noises, *shape), generator=torch.Generator().manual_seed(args.seed))
    t = torch.ones(args.noises, shape[1])
    rows = {}
    for direction, (axis, _) in DIRECTIONS.items():
        drifts = []
        for obj in OBJECTS:
            caption = f"a {obj} moves {direction} on a black background"
            denoise = pipe.make_denoiser(pipe.encode_prompts([caption] * args.noises), shape)
            with torch.no_grad():
                c = centroids(pipe.decode_latents(denoise(eps, t)).float())
            drifts.append(float((c[:, -1, axis] - c[:, 0, axis]).mean()))
        rows[direction] = {"drift": sum(drifts) / len(drifts), "per_object": dict(zip(OBJECTS, drifts))}
        print(f"moves {direction:5s}: mean drift along {'xy'[axis]} {rows[direction]['drift']:+.3f} "
              f"(per object {', '.join(f'{d:+.3f}' for d in drifts)})", flush=True)
    follows = {axis: (rows[a]["drift"] > 0) and (rows[b]["drift"] < 0)
               for axis, (a, b) in {"x": ("right", "left"), "y": ("down", "up")}.items()}
    write_report(args.json, {"model": model, "noises": args.noises, "seed": args.seed, "t": 1.0, "drift": rows,
                             "follows_direction": follows}, "direction_probe.py", argv)
    print(f"follows the direction word at t = 1: {follows}; report: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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

import torch
from _probe import load_pipeline, probe_parser, write_report

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
    parser = probe_parser(__doc__, "direction_probe.py", "--model src/vidiff/assets/world-dit --noises 8")
    parser.add_argument("--noises", type=int, default=8, help="noise draws per caption (default 8)")
    parser.add_argument("--sample-noises", type=int, default=4,
                        help="noise draws per object for whole sampled videos (default 4; 0 skips them)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise draws (default 0)")
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
    print(f"follows the direction word at t = 1: {follows}", flush=True)
    report = {"model": model, "noises": args.noises, "seed": args.seed, "t": 1.0, "drift": rows,
              "follows_direction": follows}
    if args.sample_noises > 0:
        report["sampled"] = sampled_drifts(pipe, shape, args.sample_noises, args.seed)
    write_report(args.json, report, "direction_probe.py", argv)
    print(f"report: {args.json}")
    return 0


def sampled_drifts(pipe, shape, noises: int, seed: int) -> dict:
    """Per axis: drifts of whole sampled videos for both directions from the same noise draws,
    the share that follows the word and the share the noise decided (see the module docstring)."""
    sch = pipe.scheduler
    eps = torch.randn((noises, *shape), generator=torch.Generator().manual_seed(seed + 1))
    uncond = pipe.encode_prompts([""] * noises)
    out = {"sampler": sch.sampler, "steps": sch.num_inference_steps, "guidance_scale": sch.guidance_scale}
    for name, pair in {"x": ("right", "left"), "y": ("down", "up")}.items():
        axis = DIRECTIONS[pair[0]][0]
        drifts = {d: [] for d in pair}
        for obj in OBJECTS:
            for direction in pair:
                text = pipe.encode_prompts([f"a {obj} moves {direction} on a black background"] * noises)
                with torch.no_grad():
                    z = pipe.denoise_latents(eps, text, uncond_text=uncond, guidance_scale=sch.guidance_scale)
                    c = centroids(pipe.decode_latents(z).float())
                drifts[direction] += (c[:, -1, axis] - c[:, 0, axis]).tolist()
        pos, neg = torch.tensor(drifts[pair[0]]), torch.tensor(drifts[pair[1]])
        out[name] = {
            "drift": drifts,
            "follows": {pair[0]: float((pos > 0).float().mean()), pair[1]: float((neg < 0).float().mean())},
            "noise_decided": float(((pos > 0) == (neg > 0)).float().mean()),
        }
        print(f"sampled, {pair[0]}/{pair[1]}: follows {out[name]['follows']}, "
              f"noise decided {out[name]['noise_decided']:.2f}", flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())

"""At what noise level does a shapes-world model decide an attribute, and can its caption steer it?

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/steer_probe.py --model src/vidiff/assets/world-dit

SDEdit-style: a ground-truth render of a caption is encoded, noised to a start time t0,

    x_t0 = (1 - t0) z_true + t0 eps,

and sampled from t0 down to 0 with the pipeline's sampler and guidance (the default time grid's
points below t0), once with the true caption and once with a caption that names another value of
one attribute (shape: square -> circle ...; direction: right -> left ...). The world metrics judge
every result. Per attribute and t0:

    kept      share of videos sampled with the true caption that still show the true value
    steered   share of videos sampled with the other caption that show the caption's value

At low t0 the render decides and both captions keep it (kept 1, steered 0); at t0 = 1 only the
caption is left. The band where `kept` falls is where the model decides the attribute; a model
that follows the word has `steered` near 1 from that band on. A model whose `kept` and `steered`
both fall to 0 at high t0 ignores the word and picks a default of its own. Writes JSON (default
benchmarks/results/steer_probe.json).
"""

from __future__ import annotations

import torch
from _probe import load_pipeline, probe_parser, write_report

from vidiff import diffusion as D
from vidiff.metrics.world import as_uint8_frames, evaluate_video
from vidiff.world import render, scene_from_caption
from vidiff.world.dataset import frames_to_video_tensor

# (attribute, key of the judged object, caption template, [(true value, other value), ...])
PROBES = (
    ("shape", "found_shape", "a large red {} stays still on a black background",
     [("circle", "square"), ("square", "circle"), ("triangle", "circle"), ("diamond", "square")]),
    ("direction", "found_motion", "a large green circle moves {} on a black background",
     [("right", "left"), ("left", "right"), ("down", "up"), ("up", "down")]),
)
START_TIMES = (0.5, 0.7, 0.8, 0.9, 0.95, 1.0)


def found_value(key: str, judged: dict) -> str | None:
    """The value under `key` the world metrics found for the first object ('right' for 'moves right')."""
    value = judged["objects"][0].get(key)
    return value.removeprefix("moves ") if value else value


def resample(pipe, z_true: torch.Tensor, text, t0: float, eps: torch.Tensor, uncond) -> torch.Tensor:
    """Videos `[B, 3, F, H, W]` sampled from `z_true` noised to `t0` (see the module docstring);
    `text` / `uncond`: the encoded caption and empty prompts of the guidance, one per noise draw."""
    sch = pipe.scheduler
    n = eps.shape[0]
    x, _ = D.add_noise(z_true.expand_as(eps), eps, torch.full((n,), t0), sch.make_schedule())
    grid = sch.times(sch.sampler, sch.num_inference_steps)
    times = torch.cat([torch.tensor([t0]), grid[grid < t0]])
    denoise = pipe.make_denoiser(text, tuple(z_true.shape[1:]), uncond_text=uncond, guidance_scale=sch.guidance_scale)
    with torch.no_grad():
        return pipe.decode_latents(sch.sample(denoise, x, times, sch.sampler))


def main(argv=None) -> int:
    parser = probe_parser(__doc__, "steer_probe.py", "--model src/vidiff/assets/world-dit --noises 4")
    parser.add_argument("--noises", type=int, default=4, help="noise draws per render and start time (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the renders and noise draws (default 0)")
    args = parser.parse_args(argv)

    model, pipe = load_pipeline(args.model)
    report = {"model": model, "noises": args.noises, "seed": args.seed, "start_times": list(START_TIMES),
              "sampler": pipe.scheduler.sampler, "steps": pipe.scheduler.num_inference_steps,
              "guidance_scale": pipe.scheduler.guidance_scale, "attributes": {}}
    cfg = pipe.config
    shape = pipe.vae.latent_shape(cfg.num_frames, cfg.height, cfg.width)
    eps = torch.randn((args.noises, *shape), generator=torch.Generator().manual_seed(args.seed))
    uncond = pipe.encode_prompts([""] * args.noises)
    for attribute, key, template, pairs in PROBES:
        counts = {t0: {"kept": 0, "steered": 0, "videos": 0} for t0 in START_TIMES}
        for true, other in pairs:
            frames, _ = render(scene_from_caption(template.format(true), seed=args.seed))
            z_true = pipe.encode_frames(frames_to_video_tensor(frames)[None])
            runs = [(template.format(value), value, share) for value, share in ((true, "kept"), (other, "steered"))]
            texts = [pipe.encode_prompts([caption] * args.noises) for caption, _, _ in runs]
            for t0 in START_TIMES:
                for (caption, value, share), text in zip(runs, texts):
                    videos = resample(pipe, z_true, text, t0, eps, uncond)
                    counts[t0][share] += sum(found_value(key, evaluate_video(as_uint8_frames(v), caption)) == value
                                             for v in videos)
                counts[t0]["videos"] += args.noises
        rows = {str(t0): {"kept": c["kept"] / c["videos"], "steered": c["steered"] / c["videos"], "videos": c["videos"]}
                for t0, c in counts.items()}
        report["attributes"][attribute] = {"pairs": pairs, "template": template, "by_start_time": rows}
        print(f"{attribute}: " + "; ".join(f"t0={t0} kept {r['kept']:.2f} steered {r['steered']:.2f}"
                                           for t0, r in rows.items()), flush=True)
    write_report(args.json, report, "steer_probe.py", argv)
    print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

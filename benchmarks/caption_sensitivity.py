"""Does a shapes-world model listen to each word of its caption? A denoising-loss probe.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/caption_sensitivity.py --model src/vidiff/assets/world-dit

For `--clips` fresh training-split renders (encoded by the model's VAE), fixed noise and fixed
times t, the model's x0 prediction is scored against the true latents with the true caption and
with captions where one attribute of the first object is swapped for another value:

    sensitivity(attr, t) = mean_clips [ MSE(x0_hat(x_t, swapped)) - MSE(x0_hat(x_t, true)) ]

A model that uses the word has sensitivity > 0; one that ignores it has exactly 0 (the empty
caption, "empty", bounds what the whole caption is worth). No guidance (the conditional branch).

Upstream of the denoiser, the text encoder's own share: how far a swap moves the encoder's
output tokens, `|enc(swapped) - enc(true)|^2 / |enc(true)|^2` over the clips whose swapped caption
has as many tokens as the true one. Near 0, the encoder maps the two words to the same tokens and
no denoiser can tell them apart (a jointly trained encoder can collapse words the denoiser has
not learned to use yet).

Beside it, the *energy* of an attribute: the MSE between a render and the same scene with only
that attribute changed (colour, shape), in normalised latents and in pixels. It is the most a
perfect model could gain from the word, and it tells why a model trained with latent MSE learns
some words late: a shape change is far weaker in the latents than a colour change.
Writes JSON (default benchmarks/results/caption_sensitivity.json).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from _probe import load_pipeline, probe_parser, write_report

from vidiff.world import grammar as G

ATTRIBUTES = ("size", "color", "shape", "motion", "direction")
VALUES = {"size": G.SIZES, "color": G.COLORS, "shape": G.SHAPES, "motion": G.MOTIONS}
OPPOSITE = {"moves left": "moves right", "moves right": "moves left", "moves up": "moves down", "moves down": "moves up"}
TIMES = (0.5, 0.8, 0.95)


def alternatives(spec: G.CaptionSpec, attribute: str) -> list[str]:
    """The values the first object's `attribute` could take instead of its own (a colour also
    not worn by the other object nor barred by the background), in grammar order."""
    taken = {getattr(spec.objects[0], attribute)}
    if attribute == "color":
        taken |= {o.color for o in spec.objects} | set(G.BACKGROUND_CONFLICTS[spec.background])
    return [v for v in VALUES[attribute] if v not in taken]


def with_first(objects: tuple, **change) -> tuple:
    """`objects` with the first one's fields changed (an ObjectSpec or a world SceneObject)."""
    return (dataclasses.replace(objects[0], **change), *objects[1:])


def swap_attribute(caption: str, attribute: str, rng: np.random.Generator) -> str | None:
    """The caption with the first object's `attribute` replaced by another valid value;
    "direction" reverses a directional motion (None when the first object has none)."""
    spec = G.parse_caption(caption)
    if attribute == "direction":
        motion = OPPOSITE.get(spec.objects[0].motion)
        if motion is None:
            return None
        change = {"motion": motion}
    else:
        change = {attribute: str(rng.choice(alternatives(spec, attribute)))}
    return dataclasses.replace(spec, objects=with_first(spec.objects, **change)).text()


def attribute_energy(pipe, scenes, size: int) -> dict:
    """Latent and pixel MSE between each scene and the scene with its first object's colour or
    shape changed (everything else, the motion path included, the same)."""
    from vidiff.world.dataset import frames_to_video_tensor
    from vidiff.world.render import render_batch

    out = {}
    for attribute in ("color", "shape"):
        changed = [dataclasses.replace(s, objects=with_first(s.objects, **{attribute: alternatives(s.spec(), attribute)[0]}))
                   for s in scenes]
        frames, _ = render_batch(list(scenes) + changed, size=size, with_truth=False)
        x = frames_to_video_tensor(frames)
        z = pipe.encode_frames(x)
        n = len(scenes)
        out[attribute] = {"latent_mse": float((z[n:] - z[:n]).square().mean()),
                          "pixel_mse": float((x[n:] - x[:n]).square().mean())}
    return out


@torch.no_grad()
def encoder_change(text_encoder, captions: list[str], variants: dict[str, list[str | None]]) -> dict:
    """Per attribute, the mean relative change of the text encoder's output tokens when the
    caption is swapped (pairs of equal token count only; None when there is no such pair)."""
    truth = [text_encoder.encode([c])[0] for c in captions]
    out = {}
    for attribute, swapped in variants.items():
        changes = []
        for a, other in zip(truth, swapped):
            if other is None:
                continue
            b = text_encoder.encode([other])[0]
            if a.shape == b.shape:
                changes.append(float((b - a).square().sum() / a.square().sum()))
        out[attribute] = float(np.mean(changes)) if changes else None
    return out


def main(argv=None) -> int:
    parser = probe_parser(__doc__, "caption_sensitivity.py", "--model src/vidiff/assets/world-dit --clips 48")
    parser.add_argument("--clips", type=int, default=48, help="training-split clips to probe (default 48)")
    parser.add_argument("--seed", type=int, default=123, help="world seed of the probe clips (default 123)")
    args = parser.parse_args(argv)

    from vidiff import diffusion as D
    from vidiff.world import WorldDataset

    model, pipe = load_pipeline(args.model)
    cfg = pipe.config
    world = WorldDataset(frames=cfg.num_frames, size=cfg.height, fps=cfg.fps, split="train", seed=args.seed,
                         num_samples=args.clips)
    video, captions, _ = next(world.batches(args.clips))
    z = pipe.encode_frames(video)
    rng = np.random.default_rng(args.seed)
    variants = {a: [swap_attribute(c, a, rng) for c in captions] for a in ATTRIBUTES}
    variants["empty"] = [""] * len(captions)
    schedule = pipe.scheduler.make_schedule()
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(args.seed))

    def denoiser(caps: list[str | None]):
        """(clips with a caption, their denoiser); clips whose caption is None are left out."""
        keep = [i for i, c in enumerate(caps) if c is not None]
        return keep, pipe.make_denoiser(pipe.encode_prompts([caps[i] for i in keep]), tuple(z.shape[1:]))

    def x0_error(branch, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-clip x0 MSE of a `denoiser(...)` branch (NaN for the clips it leaves out)."""
        keep, denoise = branch
        err = torch.full((z.shape[0],), float("nan"))
        with torch.no_grad():
            err[keep] = (denoise(x_t[keep], t[keep]) - z[keep]).square().mean(dim=(1, 2, 3, 4))
        return err

    true_branch = denoiser(captions)
    branches = {k: denoiser(v) for k, v in variants.items()}  # built once, used at every t
    rows = {}
    for t_value in TIMES:
        t = torch.full((z.shape[0], z.shape[2]), t_value)
        x_t, _ = D.add_noise(z, eps, t, schedule)
        base = x0_error(true_branch, x_t, t)
        rows[str(t_value)] = {"true_caption_mse": float(base.mean()),
                              **{k: float((x0_error(v, x_t, t) - base).nanmean()) for k, v in branches.items()}}
        print(f"t={t_value}: " + "  ".join(f"{k} {v:+.4f}" for k, v in rows[str(t_value)].items()), flush=True)
    text_change = encoder_change(pipe.text_encoder, captions, variants)
    print("text encoder output change: " + "  ".join(f"{k} {v:.4f}" for k, v in text_change.items() if v is not None))
    energy = attribute_energy(pipe, [world.scene(i) for i in range(min(16, args.clips))], cfg.height)
    print("energy of a change: " + "  ".join(f"{a} latent {e['latent_mse']:.4f} pixel {e['pixel_mse']:.4f}"
                                           for a, e in energy.items()))
    write_report(args.json, {"model": model, "clips": args.clips, "seed": args.seed, "sensitivity": rows,
                             "text_encoder_change": text_change, "energy": energy}, "caption_sensitivity.py", argv)
    print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

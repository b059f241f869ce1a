"""Build a latent cache of spinning shapes-world clips, their spin rate scaled by `--speed`.

A controlled test of whether the world model fails to learn a spinning square because the spin
aliases between latent frames (the VAE codes 4 frames per latent frame; at the world's rate a
square turns 37-75 degrees per latent frame, over half its 90-degree period in 83% of clips,
`spin_aliasing.py`): fine-tune the same weights, same steps, on caches that differ only in the
spin rate, then compare `spin_probe.py --speed S` (its `rotation_ratio_by_shape`). The cache holds
the first `--clips` training-split clips (world seed 0) that have a spinning object, rendered at
`--speed` times the world's spin rate, and is keyed for the recipe given, so `vidiff train` with
the same recipe, overrides and `data.cache_dir=OUT` trains on it as it is (any other recipe
rebuilds the folder from the plain world).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys

from tqdm.auto import tqdm

from vidiff.data.latent_cache import build_latent_cache
from vidiff.train.diffusion_task import cache_encoder, latent_cache_key
from vidiff.train.recipe import load_recipe
from vidiff.train.tasks import load_run_vae
from vidiff.world import WorldDataset
from vidiff.world.dataset import frames_to_video_tensor
from vidiff.world.render import render_batch
from vidiff.world.scene import caption

from spin_probe import scaled_spin


def upright_start(scene):
    """`scene` with every spinning object starting upright (angle 0, as every still object is)."""
    return dataclasses.replace(scene, objects=tuple(dataclasses.replace(o, angle0=0.0) if o.spin else o
                                                    for o in scene.objects))


def spinning_samples(cfg, clips: int, speed: float, upright: bool = False, batch: int = 64):
    """The first `clips` scenes of the recipe's world stream with a spinning object, spin x `speed`
    (and started upright with `upright`): {"video": [3, F, H, W], "caption", "name"}."""
    d = cfg.data
    world = WorldDataset(frames=d.frames, size=d.size, fps=d.fps, split=d.split, seed=d.seed,
                         num_objects=d.num_objects)
    stream = ((i, world.scene(i)) for i in itertools.count())
    picked = itertools.islice(((i, s) for i, s in stream if any(o.motion == "spins" for o in s.objects)), clips)
    while chunk := list(itertools.islice(picked, batch)):
        scenes = [scaled_spin(upright_start(s) if upright else s, speed) for _, s in chunk]
        video, _ = render_batch(scenes, size=d.size, frames=d.frames, fps=d.fps, with_truth=False)
        for (index, scene), v in zip(chunk, frames_to_video_tensor(video)):
            yield {"video": v, "caption": caption(scene), "name": f"world-{d.seed}-{index}-spin{speed:g}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python benchmarks/spin_cache.py configs/world_dit.toml runs/spin_cache_0.5 --speed 0.5 "
               "vae.path=src/vidiff/assets/world-dit/vae")
    parser.add_argument("recipe", help="the training recipe (TOML) the cache is keyed for")
    parser.add_argument("out", help="cache folder (pass it to vidiff train as data.cache_dir)")
    parser.add_argument("overrides", nargs="*", help="the recipe overrides the training run will use")
    parser.add_argument("--speed", type=float, default=1.0, help="spin rate over the world's (default 1)")
    parser.add_argument("--upright", action="store_true",
                        help="start every spin upright instead of at the world's random angle")
    parser.add_argument("--clips", type=int, default=1024, help="spinning clips to encode (default 1024)")
    args = parser.parse_intermixed_args(argv)
    if not args.speed > 0 or args.clips < 1:
        parser.error(f"need --speed > 0 and --clips >= 1; got {args.speed}, {args.clips}")
    cfg = load_recipe(args.recipe, [*args.overrides, f"data.cache_dir={args.out}"])
    vae = load_run_vae(cfg).eval()
    samples = tqdm(spinning_samples(cfg, args.clips, args.speed, args.upright), total=args.clips,
                   desc=f"spin cache {args.out}", file=sys.stderr)
    root = build_latent_cache(samples, cache_encoder(vae), args.out, encoder_key=latent_cache_key(cfg, vae),
                              batch_size=cfg.data.cache_batch_size, shard_size=1024)
    start = "upright" if args.upright else "at random angles"
    print(f"{args.clips} spinning clips at {args.speed:g}x the world's spin rate, started {start} -> {root}")


if __name__ == "__main__":
    main()

"""Causal streaming: the key/value cache vs recomputing the past at every step — time and memory.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_streaming.py   (about 5 minutes on 1 core)
     add --quick for 17 and 33 frames only.

Model: a random causal pipeline at the world model's shapes: the world VAE (`VAEConfig.world()`)
at 64x64 (16x16 latents, 64 tokens per latent frame) and the shipped DiT's size (dim 192, 6 heads,
6 layers, ffn 768, patch (1, 2, 2), first-frame concat conditioning) with `attention="causal"`;
Euler, 4 steps, guidance 1; chunks of CHUNK latent frames. No trained causal model ships, and
cost does not depend on the weights.

Methods, for 17, 33, 65 and 129 frames (9, 17, 33, 65 latent frames):
  cache      `iter_causal`: each chunk's forward attends to the cached keys/values of every
             earlier frame (computed once, when its chunk was finished)
  bounded    the same with `max_cache_frames=BOUND` (a rolling cache: flat memory)
  recompute  what the cache replaces: at every step the model runs on [all earlier latents held
             clean; the chunk] (`VideoPipeline.denoise_latents(given=...)`), the same frames
             (checked: `max_abs_diff_vs_recompute`)
Each decodes its chunks incrementally (`StreamingDecoder`), as `iter_causal` does.

Time: median of RUNS runs, methods alternated in one process, process CPU time (one intra-op
thread); wall time too. `cache_mb`: bytes of the cache's keys and values after the last chunk
(exact, from the tensors). Writes benchmarks/results/streaming.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from vidiff.machine import machine_info

FRAMES = (17, 33, 65, 129)
RUNS = 3
STEPS = 4
CHUNK = 2
BOUND = 8
PROMPT = "a large red circle moves right on a black background"
HERE = os.path.dirname(os.path.abspath(__file__))


def build():
    from vidiff.models.dit import DiTConfig, VideoDiT
    from vidiff.models.text import BuiltinTextEncoder
    from vidiff.models.vae import CausalVAE3D, VAEConfig
    from vidiff.pipelines import PipelineConfig, SchedulerConfig, VideoPipeline

    torch.manual_seed(0)
    vae = CausalVAE3D(VAEConfig.world())
    text = BuiltinTextEncoder.create(dim=32, depth=1)
    z = vae.z_dim
    dit = VideoDiT(DiTConfig(in_channels=2 * z + 4, out_channels=z, patch_size=(1, 2, 2), dim=192, num_heads=6,
                             num_layers=6, ffn_dim=768, text_dim=32, attention="causal", image_condition="concat"))
    torch.nn.init.normal_(dit.proj_out.weight, 0, 0.02)  # a fresh head predicts 0; make it real
    sch = SchedulerConfig(num_inference_steps=STEPS, guidance_scale=1.0)
    return VideoPipeline(dit.eval(), vae.eval(), text.eval(), sch, PipelineConfig(num_frames=17, height=64, width=64))


def cached(pipe, frames: int, bound: int | None):
    """`iter_causal`; returns the latents and the cache's size in MB at the end."""
    from vidiff.pipelines import streaming

    caches = []
    real = streaming.CausalDiTStream

    class Kept(real):  # keep a handle on the stream to weigh its cache
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            caches.append(self)

    streaming.CausalDiTStream = Kept
    try:
        latents = torch.cat([c.latents for c in streaming.iter_causal(pipe, PROMPT, num_frames=frames, chunk=CHUNK,
                                                                     max_cache_frames=bound, seed=0)], dim=2)
    finally:
        streaming.CausalDiTStream = real
    layers = caches[0].cache.layers
    size = sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values))
    return latents, size / 2**20


@torch.no_grad()
def recomputed(pipe, frames: int):
    """The model on [earlier latents held clean; the chunk] at every step, chunk after chunk."""
    from vidiff.pipelines.long import StreamingDecoder

    gen = torch.Generator().manual_seed(0)
    text = pipe.encode_prompts([PROMPT])
    c, total, hz, wz = pipe.vae.latent_shape(frames, 64, 64)
    past = None
    with StreamingDecoder(pipe) as dec:
        for start in range(0, total, CHUNK):
            n = min(CHUNK, total - start)
            noise = pipe.initial_noise((1, c, n, hz, wz), "independent", 0.0, gen)
            if past is None:
                lat = pipe.denoise_latents(noise, text, guidance_scale=1.0, generator=gen)
            else:
                full = torch.cat([torch.zeros_like(past), noise], dim=2)
                lat = pipe.denoise_latents(full, text, guidance_scale=1.0, given=past, given_index=past.shape[2],
                                           generator=gen)[:, :, past.shape[2]:]
            dec.decode(lat)
            past = lat if past is None else torch.cat([past, lat], dim=2)
    return past


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="17 and 33 frames only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = build()
    cached(pipe, 17, None)  # warm-up
    rows = []
    for frames in FRAMES[:2] if args.quick else FRAMES:
        times = {m: [] for m in ("cache", "bounded", "recompute")}
        walls = {m: [] for m in times}
        out = {}
        for _ in range(RUNS):
            for method in times:
                cpu, wall = time.process_time(), time.perf_counter()
                if method == "recompute":
                    out[method] = (recomputed(pipe, frames), 0.0)
                else:
                    out[method] = cached(pipe, frames, None if method == "cache" else BOUND)
                times[method].append(time.process_time() - cpu)
                walls[method].append(time.perf_counter() - wall)
        latents = out["cache"][0].shape[2]
        row = {"frames": frames, "latent_frames": latents, "runs": RUNS,
               "cpu_seconds": {m: statistics.median(t) for m, t in times.items()},
               "wall_seconds": {m: statistics.median(t) for m, t in walls.items()},
               "cache_mb": {"cache": out["cache"][1], "bounded": out["bounded"][1]},
               "max_abs_diff_vs_recompute": float((out["cache"][0] - out["recompute"][0]).abs().max())}
        row["recompute_over_cache"] = row["cpu_seconds"]["recompute"] / row["cpu_seconds"]["cache"]
        rows.append(row)
        print(f"{frames} frames ({latents} latent): cache {row['cpu_seconds']['cache']:.2f} s, bounded "
              f"{row['cpu_seconds']['bounded']:.2f} s, recompute {row['cpu_seconds']['recompute']:.2f} s "
              f"({row['recompute_over_cache']:.2f}x); cache {row['cache_mb']['cache']:.1f} MB, bounded "
              f"{row['cache_mb']['bounded']:.1f} MB; max |cache - recompute| {row['max_abs_diff_vs_recompute']:.1e}",
              flush=True)
    from vidiff.modelio import write_json

    path = os.path.join(HERE, "results", "streaming_quick.json" if args.quick else "streaming.json")
    write_json(path, {"machine": machine_info("cpu"), "command": "OMP_NUM_THREADS=1 python benchmarks/bench_streaming.py"
                      + (" --quick" if args.quick else ""), "steps": STEPS, "chunk": CHUNK, "bound": BOUND,
                      "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())

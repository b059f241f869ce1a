"""Acceptance measurements of a world model (issue 8): quality, baseline, image-to-video, steps and
guidance tables, and generation speed. Every row is what `vidiff eval world` computes for the
same settings (the command line is recorded beside each row).

    python benchmarks/eval_world_model.py --model src/vidiff/assets/world-dit \
        --baseline src/vidiff/assets/world-per-frame --json benchmarks/results/world_model.json

Writes JSON (with the machine) and prints markdown tables for the README. `--ceiling-only` stops
after the ground-truth and VAE round-trip rows, to ask whether a caption fails in the VAE or in
the DiT:

    python benchmarks/eval_world_model.py --prompts benchmarks/prompts/world_spins.txt --ceiling-only \
        --json benchmarks/results/world_spins_ceiling.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

from vidiff.cli.eval_world import generate_and_evaluate, read_prompts
from vidiff.cli.generate import load_pipeline
from vidiff.machine import machine_info
from vidiff.metrics.world import aggregate, evaluate_video, shape_confusion
from vidiff.modelio import write_json
from vidiff.video import frames_to_tensor, tensor_to_frames
from vidiff.world import render, scene_from_caption

KEYS = ("color_acc", "shape_acc", "size_acc", "motion_acc", "all_correct", "persistence", "identity_drift",
        "jitter", "background_flicker", "first_frame_psnr")
HERE = os.path.dirname(os.path.abspath(__file__))


def summary(rows: list[dict]) -> dict:
    agg = aggregate(rows)
    return ({k: agg.get(k) for k in KEYS if agg.get(k) is not None} | {"count": agg["count"]}
            | {"shape_confusion": shape_confusion(rows)})


def ground_truth(prompts: list[str], seeds: int, pipe) -> tuple[dict, dict]:
    """The world metrics of the ground-truth renders, and of the same renders encoded and decoded
    by the pipeline's VAE: no latent model can score above the second row (the latent space's
    ceiling)."""
    cfg = pipe.config
    rows, round_trip = [], []
    for p in prompts:
        for s in range(seeds):
            frames, _ = render(scene_from_caption(p, seed=s), size=cfg.height, frames=cfg.num_frames, fps=cfg.fps)
            rows.append(evaluate_video(frames, p))
            decoded = pipe.decode_latents(pipe.encode_frames(frames_to_tensor(frames)[None].to(pipe.device)))
            round_trip.append(evaluate_video(tensor_to_frames(decoded[0]), p))
    return summary(rows), summary(round_trip)


def timed_generation(pipe, prompt: str, repeats: int) -> dict:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe(prompt, seed=i, progress=False)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "runs_s": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="pipeline folder (default: the shipped one)")
    ap.add_argument("--baseline", default=None, help="per-frame baseline pipeline folder")
    ap.add_argument("--prompts", default=os.path.join(HERE, "prompts", "world_eval.txt"))
    ap.add_argument("--heldout", default=os.path.join(HERE, "prompts", "world_heldout.txt"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--table-seeds", type=int, default=1, help="seeds per prompt for the steps/guidance tables")
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32, 50])
    ap.add_argument("--samplers", nargs="+", default=["euler", "unipc"])
    ap.add_argument("--json", default=os.path.join(HERE, "results", "world_model.json"))
    ap.add_argument("--ceiling-only", action="store_true",
                    help="only the ground-truth and VAE round-trip rows of --prompts (no sampling)")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)

    pipe = load_pipeline(args.model)
    prompts, heldout = read_prompts(args.prompts), read_prompts(args.heldout)
    model = args.model or "shipped"
    ev = f"vidiff eval world --model {model} --prompts {os.path.relpath(args.prompts)} --seeds {args.seeds}"
    out: dict = {"machine": machine_info(),
                 "defaults": {"sampler": pipe.scheduler.sampler, "steps": pipe.scheduler.num_inference_steps,
                              "guidance": pipe.scheduler.guidance_scale}}
    out["ground_truth"], out["vae_round_trip"] = ground_truth(prompts, args.seeds, pipe)
    if args.ceiling_only:
        out["prompts"] = os.path.relpath(args.prompts)
        write_json(args.json, out)
        print_table(out, args.json)
        return
    out["t2v"] = summary(generate_and_evaluate(pipe, prompts, args.seeds)) | {"command": ev}
    out["i2v"] = summary(generate_and_evaluate(pipe, prompts, args.seeds, image_to_video=True)) | {
        "command": ev + " --image-to-video"}
    out["heldout"] = summary(generate_and_evaluate(pipe, heldout, args.seeds)) | {
        "command": f"vidiff eval world --model {model} --prompts {os.path.relpath(args.heldout)} --seeds {args.seeds}"}
    if args.baseline:
        base = load_pipeline(args.baseline)
        out["per_frame_baseline"] = summary(generate_and_evaluate(base, prompts, args.seeds)) | {
            "command": ev.replace(f"--model {model}", f"--model {args.baseline}")}
    out["steps_table"] = []
    for sampler in args.samplers:
        for steps in args.steps:
            rows = generate_and_evaluate(pipe, prompts, args.table_seeds, progress=False, sampler=sampler,
                                         num_inference_steps=steps)
            out["steps_table"].append({"sampler": sampler, "steps": steps} | summary(rows))
            print(sampler, steps, out["steps_table"][-1]["all_correct"], flush=True)
    out["guidance_table"] = []
    for scale in (1.0, pipe.scheduler.guidance_scale):
        rows = generate_and_evaluate(pipe, prompts, args.table_seeds, progress=False, guidance_scale=scale)
        out["guidance_table"].append({"guidance": scale} | summary(rows))
    out["speed_17x64x64"] = timed_generation(pipe, prompts[0], 5)
    write_json(args.json, out)
    print_table(out, args.json)
    print(f"speed: {out['speed_17x64x64']['median_s']:.2f} s median")


def print_table(out: dict, path: str) -> None:
    cols = ("color_acc", "shape_acc", "motion_acc", "all_correct", "background_flicker", "identity_drift",
            "first_frame_psnr")
    print("| run | " + " | ".join(cols) + " |")
    for name in ("ground_truth", "vae_round_trip", "t2v", "i2v", "heldout", "per_frame_baseline"):
        if name in out:
            print(f"| {name} | " + " | ".join(f"{out[name][c]:.4g}" if out[name].get(c) is not None else "" for c in cols) + " |")
    print(f"report: {path}")


if __name__ == "__main__":
    main()

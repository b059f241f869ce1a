"""What a VAE keeps of each shape: ground-truth renders sent through the VAE alone, judged by the
world metrics, per shape, size and background.

No latent model can draw a shape its VAE does not give back, so this is the ceiling of shape
accuracy for every diffusion model trained on the VAE's latents. Each VAE sees the same renders:
4 shapes x 6 motions x 2 sizes x `--seeds` scenes (colours and backgrounds rotate). Reports shape
accuracy per shape and size (and per background, `by_background`), the found-shape confusion, the
mean four-fold moment |C_4| of the found object (0.29 for a true square, 0 for a circle; the
tracker's square / circle boundary is about 0.15), the reconstruction PSNR and background
flicker, and how far apart the encoder puts a square and each other shape (`latent_gap`).

    python benchmarks/vae_shapes.py --vae src/vidiff/assets/world-dit/vae runs/vae_dec/export
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import numpy as np
import torch
from _probe import write_report
from tqdm import tqdm

from vidiff.metrics.world import as_uint8_frames, caption_object_track, evaluate_video, shape_confusion
from vidiff.models.vae import CausalVAE3D
from vidiff.train.vae_task import reconstruction_psnr
from vidiff.world import render, scene_from_caption
from vidiff.world.dataset import frames_to_video_tensor
from vidiff.world.grammar import SHAPES, CaptionSpec, parse_caption

MOTIONS = ("moves right", "moves up", "bounces", "spins", "moves left", "stays still")
COLORS = ("red", "green", "blue", "yellow")
BACKGROUNDS = ("black", "navy", "gray")


def captions(seeds: int) -> list[tuple[str, int]]:
    """`(caption, seed)` of every render: colours and backgrounds rotate with motion and seed
    (never blue on navy, which the world does not sample)."""
    out = []
    for shape in SHAPES:
        for m, motion in enumerate(MOTIONS):
            for size in ("small", "large"):
                for seed in range(seeds):
                    color = COLORS[(m + seed) % len(COLORS)]
                    background = BACKGROUNDS[(seed + m) % len(BACKGROUNDS)]
                    if color == "blue" and background == "navy":
                        background = "black"
                    out.append((f"a {size} {color} {shape} {motion} on a {background} background", seed))
    return out


def c4_of_found(frames: np.ndarray, spec: CaptionSpec) -> float | None:
    """Mean |C_4| of the caption's object colour over the frames where it is found (None: never found)."""
    track = caption_object_track(frames, spec)
    if track is None or not track.found.any():
        return None
    return float(np.abs(track.moments[track.found, 2]).mean())


def latent_gap(vae: CausalVAE3D) -> dict[str, float]:
    """``|mu(square) - mu(other)|`` (L2 over the whole latent) of a still red square and the very
    same scene with only the shape swapped (same place, size, angle), per size: how far apart the
    encoder puts the shapes."""
    def mean(scene) -> torch.Tensor:
        frames, _ = render(scene, size=64)
        with torch.no_grad():
            return vae.encode(frames_to_video_tensor(frames)[None]).mean

    out = {}
    for size in ("small", "large"):
        scene = scene_from_caption(f"a {size} red square stays still on a black background")
        square = mean(scene)
        for other in ("circle", "triangle", "diamond"):
            swapped = dataclasses.replace(scene, objects=(dataclasses.replace(scene.objects[0], shape=other),))
            out[f"{size} square - {other}"] = float((square - mean(swapped)).norm())
    return out


def judge(vae: CausalVAE3D, renders: list[tuple[str, np.ndarray]]) -> dict:
    rows, psnr = [], []
    groups = {f"{size} {shape}": {"shape_acc": [], "c4": []} for shape in SHAPES for size in ("small", "large")}
    by_background: dict[str, list[float]] = {}
    for caption, frames in tqdm(renders, desc="vae", leave=False, disable=None):
        x = frames_to_video_tensor(frames)[None]
        with torch.no_grad():
            recon = vae.decode(vae.encode(x).mode()).clamp(-1, 1)
        psnr.append(reconstruction_psnr(x, recon))
        decoded = as_uint8_frames(recon[0])
        spec = parse_caption(caption)
        rows.append(evaluate_video(decoded, spec))
        group = groups[f"{spec.objects[0].size} {spec.objects[0].shape}"]
        group["shape_acc"].append(rows[-1]["shape_acc"])
        by_background.setdefault(f"{spec.objects[0].size} {spec.objects[0].shape} on {spec.background}", []).append(
            rows[-1]["shape_acc"])
        value = c4_of_found(decoded, spec)
        if value is not None:
            group["c4"].append(value)
    by = {key: {"shape_acc": float(np.mean(g["shape_acc"])), "c4": float(np.mean(g["c4"])) if g["c4"] else None,
                "count": len(g["shape_acc"])} for key, g in groups.items()}
    return {"shape_acc": float(np.mean([r["shape_acc"] for r in rows])), "psnr_median": statistics.median(psnr),
            "background_flicker": float(np.mean([r["background_flicker"] for r in rows])),
            "latent_gap": latent_gap(vae),
            "by_shape_and_size": by, "shape_confusion": shape_confusion(rows),
            "by_background": {key: {"shape_acc": float(np.mean(v)), "count": len(v)} for key, v in sorted(by_background.items())}}


def judge_truth(renders: list[tuple[str, np.ndarray]]) -> float:
    """Shape accuracy of the renders themselves (1.0 unless the tracker is wrong)."""
    return float(np.mean([evaluate_video(frames, c)["shape_acc"] for c, frames in renders]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python benchmarks/vae_shapes.py --vae src/vidiff/assets/world-dit/vae")
    parser.add_argument("--vae", nargs="+", required=True, help="VAE folders (e.g. a pipeline's vae/)")
    parser.add_argument("--seeds", type=int, default=2, help="scenes per shape, motion and size")
    parser.add_argument("--json", default="benchmarks/results/vae_shapes.json", help="report path")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    renders = [(c, render(scene_from_caption(c, seed=s), size=64)[0]) for c, s in captions(args.seeds)]
    truth = judge_truth(renders)
    report = {"renders": len(renders), "ground_truth_shape_acc": truth, "vaes": {}}
    for folder in args.vae:
        report["vaes"][folder] = judge(CausalVAE3D.from_pretrained(folder).eval(), renders)
    write_report(args.json, report, "vae_shapes.py", argv)
    print("| VAE | shape | PSNR dB | flicker | " + " | ".join(f"{s} small / large" for s in SHAPES) + " |")
    for folder, r in report["vaes"].items():
        cells = [f"{r['by_shape_and_size'][f'small {s}']['shape_acc']:.2f} / {r['by_shape_and_size'][f'large {s}']['shape_acc']:.2f}"
                 for s in SHAPES]
        print(f"| {folder} | {r['shape_acc']:.2f} | {r['psnr_median']:.1f} | {r['background_flicker']:.5f} | "
              + " | ".join(cells) + " |")
    print(f"ground truth: {truth:.2f}; report: {args.json}")


if __name__ == "__main__":
    main()

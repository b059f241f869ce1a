"""Does a world model keep a still object's size, within one clip and across sliding windows?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/size_probe.py --model src/vidiff/assets/world-dit

Sliding windows make a long video of clips that each continue the last one, so any steady
change of size within one clip compounds over the windows (`size_growth` in
benchmarks/eval_long.py). This probe looks for it inside a single clip at the training length.
For captions whose object keeps its size (`stays still`, `spins`) and `--seeds` seeds, it
tracks the object's area in every frame (`vidiff.metrics.world.caption_object_area`) of

* the ground-truth render (scene seed = seed),
* that render sent through the VAE alone (encode, decode),
* text-to-video, and image-to-video from the render's first frame (`--sampler`, `--steps` and
  `--guidance`, each by default the model's),

and reports the area profile relative to frames 1-4, geometric mean over the videos,

    profile[f] = exp(mean_v log(area_v[f] / median(area_v[1:5]))),    growth = exp(mean_{v, f >= F-4} log(...))

(frame 0 is left out of the reference: it is the causal VAE's single-frame latent). Truth and
VAE give 1 for a model that keeps sizes; a video whose object is not found in every frame is
left out and counted.

With `--long-seeds K`, it also makes K sliding-window videos per caption at 8x the clip length
(default window and overlap, `--overlap-space`) and measures, for each window k (the video frames
it adds, `(F - 1) k + 1 .. (F - 1)(k + 1)`), the median area over its first and its last 4
frames, relative to frames 1-4 of the video: `within[k] = end[k] / start[k]` is the growth inside
window k, `handoff[k] = start[k + 1] / end[k]` the step from one window to the next (geometric
means over the videos). Writes JSON (default benchmarks/results/size_probe.json).
"""

from __future__ import annotations

import numpy as np
from _probe import load_pipeline, probe_parser, write_report

from vidiff.metrics.world import caption_object_area
from vidiff.pipelines.long import generate_long
from vidiff.video import frames_to_tensor, tensor_to_frames
from vidiff.world.render import render
from vidiff.world.scene import scene_from_caption

CAPTIONS = (
    "a large red circle stays still on a black background",
    "a large magenta square stays still on a checkered background",
    "a large white diamond stays still on a navy background",
    "a small yellow circle stays still on a black background",
    "a large green square spins on a gray background",
    "a small orange triangle spins on a black background",
)
REFERENCE = slice(1, 5)


def area_profile(frames: np.ndarray, caption: str) -> np.ndarray | None:
    """The caption's first object's area in each frame of uint8 `frames` `[F, H, W, 3]` over its
    median area in frames 1-4; None unless the object is found in every frame."""
    area = caption_object_area(frames, caption)
    if area is None or not np.isfinite(area).all():
        return None
    return area / np.median(area[REFERENCE])


def summarise(profiles: list[np.ndarray], skipped: int) -> dict:
    """Geometric-mean profile, its growth over the last 4 frames, and the per-video growths."""
    if not profiles:
        return {"videos": 0, "skipped": skipped}
    logs = np.log(np.stack(profiles))
    per_video = np.exp(logs[:, -4:].mean(axis=1))
    return {"videos": len(profiles), "skipped": skipped,
            "profile": np.exp(logs.mean(axis=0)).round(4).tolist(),
            "growth": float(np.exp(logs[:, -4:].mean())),
            "growth_min": float(per_video.min()), "growth_max": float(per_video.max())}


def window_sizes(frames: np.ndarray, caption: str, step: int, windows: int) -> tuple[np.ndarray, np.ndarray] | None:
    """`(start, end)` `[windows]`: the median area over the first and the last 4 frames that each
    window adds (window k adds frames `step k + 1 .. step (k + 1)`), over the median of frames
    1-4; None when the object is missing from any of those 4-frame spans."""
    area = caption_object_area(frames, caption)
    if area is None:
        return None
    spans = [(step * k + 1, step * k + 5) for k in range(windows)] + [(step * (k + 1) - 3, step * (k + 1) + 1)
                                                                    for k in range(windows)]
    medians = np.array([np.nanmedian(area[a:b]) if np.isfinite(area[a:b]).any() else np.nan for a, b in spans])
    if not np.isfinite(medians).all():
        return None
    medians = medians / medians[0]
    return medians[:windows], medians[windows:]


def summarise_windows(rows: list[tuple[np.ndarray, np.ndarray]], skipped: int) -> dict:
    """Geometric means over videos of the window start and end sizes, the growth within each
    window and the step at each hand-off."""
    if not rows:
        return {"videos": 0, "skipped": skipped}
    start = np.log(np.stack([r[0] for r in rows]))
    end = np.log(np.stack([r[1] for r in rows]))

    def gm(logs):
        return np.exp(logs.mean(axis=0)).round(4).tolist()

    return {"videos": len(rows), "skipped": skipped, "start": gm(start), "end": gm(end),
            "within": gm(end - start), "handoff": gm(start[:, 1:] - end[:, :-1])}


def measure_windows(pipe, seeds: int, overlap_space: str, windows: int = 8, **sampling) -> dict:
    """`window_sizes` of `seeds` sliding-window videos per caption, `windows` clips long,
    summarised by `summarise_windows`."""
    step = pipe.config.num_frames - 1
    rows, skipped = [], 0
    for caption in CAPTIONS:
        for seed in range(seeds):
            out = generate_long(pipe, caption, num_frames=windows * step + 1, overlap_space=overlap_space,
                                seed=seed, **sampling)
            sizes = window_sizes(np.asarray(out.frames), caption, step, windows)
            if sizes is None:
                skipped += 1
            else:
                rows.append(sizes)
        print(f"{caption}: long videos done", flush=True)
    return {"long_seeds": seeds, "overlap_space": overlap_space, **summarise_windows(rows, skipped)}


def main(argv=None) -> int:
    parser = probe_parser(__doc__, "size_probe.py", "--model src/vidiff/assets/world-dit --seeds 6")
    parser.add_argument("--seeds", type=int, default=6, help="seeds per caption (default 6)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    parser.add_argument("--sampler", default=None, help="sampler (default: the model's)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--long-seeds", type=int, default=0,
                        help="sliding-window videos per caption at 8x the clip length (default 0: none)")
    parser.add_argument("--overlap-space", default="latent", choices=("latent", "pixel"),
                        help="where each window takes its overlap from (default latent)")
    args = parser.parse_args(argv)

    model, pipe = load_pipeline(args.model)
    cfg = pipe.config
    kinds = ("ground_truth", "vae", "text_to_video", "image_to_video")
    profiles = {k: [] for k in kinds}
    skipped = dict.fromkeys(kinds, 0)
    for caption in CAPTIONS:
        for seed in range(args.seeds):
            truth, _ = render(scene_from_caption(caption, seed=seed), size=cfg.height, frames=cfg.num_frames)
            rec = tensor_to_frames(pipe.decode_latents(pipe.encode_frames(frames_to_tensor(truth)[None].to(pipe.device))))
            sampling = dict(seed=seed, guidance_scale=args.guidance, sampler=args.sampler,
                            num_inference_steps=args.steps, progress=False)
            videos = {
                "ground_truth": truth,
                "vae": rec,
                "text_to_video": pipe(caption, **sampling).frames,
                "image_to_video": pipe(caption, image=truth[0], **sampling).frames,
            }
            for kind, frames in videos.items():
                p = area_profile(np.asarray(frames), caption)
                if p is None:
                    skipped[kind] += 1
                else:
                    profiles[kind].append(p)
        print(f"{caption}: done", flush=True)
    report = {"model": model, "captions": list(CAPTIONS), "seeds": args.seeds, "guidance": args.guidance,
              "sampler": args.sampler, "steps": args.steps,
              **{kind: summarise(profiles[kind], skipped[kind]) for kind in kinds}}
    if args.long_seeds > 0:
        report["windows"] = w = measure_windows(pipe, args.long_seeds, args.overlap_space, guidance_scale=args.guidance,
                                                sampler=args.sampler, num_inference_steps=args.steps)
        if w["videos"]:
            print(f"windows ({w['videos']} videos): growth within {w['within']}, hand-off {w['handoff']}")
    for kind in kinds:
        r = report[kind]
        if r["videos"]:
            print(f"{kind:15s} growth over the clip {r['growth']:.3f} ({r['growth_min']:.3f}-{r['growth_max']:.3f}, "
                  f"{r['videos']} videos, {r['skipped']} left out)")
    write_report(args.json, report, "size_probe.py", argv)
    print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

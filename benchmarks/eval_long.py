"""Acceptance numbers of long-video generation (issue 7) for a pipeline folder.

Run (on the trained world model, once it exists):
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/eval_long.py --model src/vidiff/assets/world-dit \\
        --seeds 4 --modes window fuse keyframes --out benchmarks/results/long_eval.json
Smoke run on any pipeline folder: --quick (2 captions, 1 seed, 2x length, one mode).

For each mode, with captions whose objects stay in view ("stays still", "spins", "bounces"; never
a held-out combination):
  * identity drift and background flicker (vidiff.metrics.world.evaluate_video) of videos at
    `--multiple` x the training length (default 8: 17 -> 129 frames) against the same captions
    and seeds at the training length (one pass); ratio = mean(long) / mean(short).
    Acceptance: both ratios <= 1.5.
  * persistence of the long videos (fraction of frames the object is found). Acceptance >= 0.95.
  * size growth: object area over the last clip length of a long video / over its first
    (geometric mean over videos; every caption here keeps its size, so 1 is right). Diagnostic.
  * the same drift numbers per caption (`per_caption`), since a ratio of means weighs most the
    captions that drift most.
  * seams: `boundary_change_ratio` (mean frame-to-frame change at window boundaries / median
    change elsewhere), mean over videos. Acceptance <= 1.5 (mean of `max_ratio` also reported).
    Per video: the boundary change in grey levels (`seam_change`, mean |dI| in 0..255, against
    `median_change`, and `seam_change_before`, the change one frame earlier, inside the previous
    window), how many videos exceed 1.5, and `start_ratio_short`, the same ratio at a 17-frame
    clip's own first step (frame 0 -> 1), which has no window boundary at all.
Prompt schedules (same object, the motion changes, e.g. moves right -> moves left -> right ...):
  * a long video alternates the pair's two captions every training-clip length (16 new frames:
    `--multiple` segments, 8 for 129 frames). One clip length per segment because a mover
    travels 0.3-0.42 of the width per clip in the shapes world: a 64-frame "moves right" would
    carry the object out of the picture, and the world metrics judge motion over a clip.
  * each segment (the frames its windows added) is judged against its caption; motion correct in
    >= 75 % of segments; colour and shape judged right in every segment (the captions share
    them, so right everywhere = the same across every change: `schedule_same_colour_and_shape`);
    and, apart from whether they match the caption, the colour and shape the tracker finds are
    the same in every segment (`schedule_identity_kept`: the identity carried across the changes).
VAE seams (no diffusion model): ground-truth renders encoded and decoded as the latent and the
pixel overlap spaces do it (`vae_seams`), to tell the VAE's share of a seam from the model's.
Writes a JSON report with every per-video row and an "acceptance" block of booleans.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from vidiff.machine import machine_info
from vidiff.pipelines.long import WINDOW_NOISES

DRIFT_CAPTIONS = (
    "a large red circle stays still on a black background",
    "a large green square spins on a gray background",
    "a small yellow circle bounces on a navy background",
    "a large magenta square stays still on a checkered background",
    "a small orange triangle spins on a black background",
    "a large white diamond stays still on a navy background",
)
SCHEDULE_PAIRS = (
    ("a large cyan circle moves right on a black background", "a large cyan circle moves left on a black background"),
    ("a large green triangle moves up on a gray background", "a large green triangle moves down on a gray background"),
    ("a small blue circle moves left on a navy background", "a small blue circle moves right on a navy background"),
    ("a large orange square stays still on a black background", "a large orange square spins on a black background"),
)


def check_captions() -> None:
    """Refuse held-out combinations: the acceptance numbers are about length, not generalisation."""
    from vidiff.world.grammar import parse_caption
    from vidiff.world.splits import is_heldout

    for cap in DRIFT_CAPTIONS + tuple(c for pair in SCHEDULE_PAIRS for c in pair):
        for obj in parse_caption(cap).objects:
            if is_heldout(obj.color, obj.shape, obj.motion):
                raise SystemExit(f"caption {cap!r} is a held-out combination; change the list")


def mean(values) -> float | None:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def geometric_mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.exp(np.mean(np.log(values)))) if values else None


def per_caption(short_rows: list[dict], long_rows: list[dict]) -> dict[str, dict]:
    """The drift numbers of each caption on its own (a ratio of means over all captions weighs the
    captions that drift most): mean drift at both lengths, their ratio, size growth (geometric
    mean) and seam ratio (mean), over that caption's seeds."""
    out = {}
    for cap in dict.fromkeys(r["caption"] for r in long_rows):
        s = mean(r["identity_drift"] for r in short_rows if r["caption"] == cap)
        lo = [r for r in long_rows if r["caption"] == cap]
        d = mean(r["identity_drift"] for r in lo)
        out[cap] = {"identity_drift_short": s, "identity_drift_long": d,
                    "identity_drift_ratio": None if s is None or d is None or not s else d / s,
                    "size_growth": geometric_mean(r["size_growth"] for r in lo),
                    "seam_ratio": mean(r["seam_ratio"] for r in lo)}
    return out


def alternating_schedule(first: str, then: str, segments: int, segment: int) -> list[tuple[str, int | None]]:
    """A `prompts=` schedule of `segments` segments of `segment` frames that alternates `first`
    and `then`; the last segment takes the remaining frames."""
    captions = [first if i % 2 == 0 else then for i in range(segments)]
    return [(cap, segment) for cap in captions[:-1]] + [(captions[-1], None)]


def schedule_runs(windows) -> list[tuple[str, int, int]]:
    """Consecutive windows with the same prompt merged: `(prompt, first_frame, end_frame)` of the
    frames they added."""
    runs: list[tuple[str, int, int]] = []
    for w in windows:
        if runs and runs[-1][0] == w.prompt:
            runs[-1] = (w.prompt, runs[-1][1], w.end_frame)
        else:
            runs.append((w.prompt, w.first_frame, w.end_frame))
    return runs


def long_video(pipe, mode: str, settings: dict, args, **request):
    """`generate_long(pipe, **request, **settings)`, or for mode "causal" the chunks of
    `iter_causal` (`--chunk` latent frames, the cache bounded to the window less a chunk)
    assembled the same way: an object with `frames`, `boundaries` and `windows`."""
    from types import SimpleNamespace

    from vidiff.pipelines.long import generate_long
    from vidiff.pipelines.streaming import clip_cache_frames, iter_causal

    if mode != "causal":
        return generate_long(pipe, **request, **settings)
    chunks = list(iter_causal(pipe, **request, chunk=args.chunk,
                              max_cache_frames=clip_cache_frames(pipe, args.chunk, args.window),
                              guidance_scale=args.guidance))
    return SimpleNamespace(frames=np.concatenate([c.frames for c in chunks]), boundaries=[c.start for c in chunks[1:]],
                           windows=[c.info for c in chunks])


def evaluate_mode(pipe, mode: str, args) -> dict:
    from vidiff.metrics.seams import boundary_change_ratio, frame_changes
    from vidiff.metrics.world import evaluate_video, size_growth
    from vidiff.pipelines.long import default_context_noise

    short_frames = pipe.config.num_frames
    r = pipe.vae.temporal_factor
    long_frames = 1 + args.multiple * (short_frames - 1)
    long_frames = 1 + (long_frames - 1) // r * r
    captions = DRIFT_CAPTIONS[: args.captions]
    context_noise = default_context_noise(pipe, "window" if mode == "causal" else mode) \
        if args.context_noise is None else args.context_noise
    settings = dict(window=args.window, overlap=args.overlap, mode=mode, overlap_space=args.overlap_space,
                    guidance_scale=args.guidance, history_guidance=args.history_guidance,
                    context_noise=context_noise, window_noise=args.window_noise)
    short_rows, long_rows = [], []
    for cap in captions:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            short = pipe(cap, seed=seed, progress=False).frames
            out = long_video(pipe, mode, settings, args, prompt=cap, num_frames=long_frames, seed=seed)
            s_row = evaluate_video(short, cap)
            l_row = evaluate_video(out.frames, cap)
            seam = boundary_change_ratio(out.frames, out.boundaries)
            l_row.update(seed=seed, seam_ratio=seam["ratio"], seam_max_ratio=seam["max_ratio"],
                         seam_change=mean(seam["boundary_changes"]), median_change=seam["median_change"],
                         seam_change_before=mean(frame_changes(out.frames)[[b - 2 for b in out.boundaries]]),
                         size_growth=size_growth(out.frames, cap, short_frames), seconds=time.perf_counter() - t0)
            # the same ratio at a single clip's own first step (frame 0 -> 1, the first generated
            # after the first latent): what a window boundary compares with
            s_row.update(seed=seed, start_ratio=boundary_change_ratio(short, [1])["ratio"])
            for row in (s_row, l_row):
                row.pop("objects", None)
            short_rows.append(s_row)
            long_rows.append(l_row)
            print(f"  [{mode}] {cap!r} seed {seed}: drift {s_row['identity_drift']} -> {l_row['identity_drift']}, "
                  f"flicker {s_row['background_flicker']} -> {l_row['background_flicker']}, "
                  f"persistence {l_row['persistence']:.3f}, seam {seam['ratio']}", flush=True)

    def ratio(key):
        a, b = mean(r[key] for r in long_rows), mean(r[key] for r in short_rows)
        return None if a is None or not b else a / b

    schedule_rows = []
    segment = short_frames - 1
    for first, then in SCHEDULE_PAIRS[: args.pairs]:
        schedule = alternating_schedule(first, then, args.multiple, segment)
        for seed in range(args.seeds):
            out = long_video(pipe, mode, settings, args, prompts=schedule, num_frames=long_frames, seed=seed)
            row = {"captions": [first, then], "seed": seed, "segments": []}
            for cap, a, b in schedule_runs(out.windows):
                judged = evaluate_video(out.frames[a:b], cap)
                found = judged["objects"][0]
                row["segments"].append({"caption": cap, "frames": [a, b], "motion_acc": judged["motion_acc"],
                                        "color_acc": judged["color_acc"], "shape_acc": judged["shape_acc"],
                                        "found_color": found.get("found_color"), "found_shape": found.get("found_shape")})
            row["same_colour_and_shape"] = all(s["color_acc"] == 1.0 and s["shape_acc"] == 1.0 for s in row["segments"])
            seen = {(s["found_color"], s["found_shape"]) for s in row["segments"]}
            row["identity_kept"] = len(seen) == 1 and None not in next(iter(seen))
            schedule_rows.append(row)
            print(f"  [{mode}] schedule {first!r} <-> {then!r} seed {seed}: motion "
                  f"{[s['motion_acc'] for s in row['segments']]}, right colour/shape {row['same_colour_and_shape']}, "
                  f"identity kept {row['identity_kept']}",
                  flush=True)

    over = [r for r in long_rows if r["seam_ratio"] is not None and r["seam_ratio"] > 1.5]
    summary = {
        "short_frames": short_frames, "long_frames": long_frames,
        "identity_drift_short": mean(r["identity_drift"] for r in short_rows),
        "identity_drift_long": mean(r["identity_drift"] for r in long_rows),
        "identity_drift_ratio": ratio("identity_drift"),
        "background_flicker_short": mean(r["background_flicker"] for r in short_rows),
        "background_flicker_long": mean(r["background_flicker"] for r in long_rows),
        "background_flicker_ratio": ratio("background_flicker"),
        "persistence_long": mean(r["persistence"] for r in long_rows),
        # geometric mean over the long videos of last-clip / first-clip object area
        "size_growth": geometric_mean(r["size_growth"] for r in long_rows),
        "seam_ratio": mean(r["seam_ratio"] for r in long_rows),
        "seam_max_ratio": mean(r["seam_max_ratio"] for r in long_rows),
        "start_ratio_short": mean(r["start_ratio"] for r in short_rows),
        # per video: how many exceed 1.5, and the largest boundary change there (mean |dI|, 0..255)
        "seam_videos_over_1.5": len(over),
        "seam_change_max_over_1.5": max((r["seam_change"] for r in over), default=None),
        "schedule_motion_acc": mean(s["motion_acc"] for row in schedule_rows for s in row["segments"]),
        "schedule_same_colour_and_shape": mean(float(row["same_colour_and_shape"]) for row in schedule_rows),
        "schedule_identity_kept": mean(float(row["identity_kept"]) for row in schedule_rows),
        "per_caption": per_caption(short_rows, long_rows),
        "context_noise": context_noise,
    }
    def ok(v, test):
        return None if v is None else bool(test(v))

    summary["acceptance"] = {
        "identity_drift_ratio<=1.5": ok(summary["identity_drift_ratio"], lambda v: v <= 1.5),
        "background_flicker_ratio<=1.5": ok(summary["background_flicker_ratio"], lambda v: v <= 1.5),
        "persistence>=0.95": ok(summary["persistence_long"], lambda v: v >= 0.95),
        "seam_ratio<=1.5": ok(summary["seam_ratio"], lambda v: v <= 1.5),
        "schedule_motion_acc>=0.75": ok(summary["schedule_motion_acc"], lambda v: v >= 0.75),
        "schedule_same_colour_and_shape==1": ok(summary["schedule_same_colour_and_shape"], lambda v: v == 1.0),
        "schedule_identity_kept==1": ok(summary["schedule_identity_kept"], lambda v: v == 1.0),
    }
    return {"summary": summary, "short": short_rows, "long": long_rows, "schedules": schedule_rows}


def vae_seams(pipe, args) -> dict:
    """The VAE's own share of the seams, no diffusion model involved: ground-truth renders of the
    drift captions at the long length are encoded and decoded the two ways the window modes use.

    latent: the whole latent sequence decoded incrementally (what overlap_space="latent" does).
    pixel:  window by window: window k's latents are the encoding of its ground-truth frames,
            with its first `held` latents replaced by the encoding of the previous window's last
            decoded frames; each window decoded on its own, the overlap frames dropped
            (what overlap_space="pixel" does, with perfect content).
    Reports `boundary_change_ratio` at the window boundaries for both and for the ground truth.
    """
    import torch

    from vidiff.metrics.seams import boundary_change_ratio
    from vidiff.pipelines.long import default_overlap, latent_to_frames, to_uint8, window_starts
    from vidiff.world.render import render
    from vidiff.world.scene import scene_from_caption

    r = pipe.vae.temporal_factor
    long_frames = 1 + (args.multiple * (pipe.config.num_frames - 1)) // r * r
    window = args.window or pipe.vae.latent_num_frames(pipe.config.num_frames)
    total = pipe.vae.latent_num_frames(long_frames)
    starts = window_starts(total, window, default_overlap(window, "window") if args.overlap is None else args.overlap)
    rows = []
    for cap in DRIFT_CAPTIONS[: args.captions]:
        gt, _ = render(scene_from_caption(cap, seed=0, frames=long_frames), size=pipe.config.height)
        x = torch.from_numpy(gt).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None].to(pipe.device)
        latent_frames = to_uint8(pipe.decode_latents(pipe.encode_frames(x)))
        parts, tail, prev_end, boundaries = [], None, 0, []
        for k, s in enumerate(starts):
            e = min(s + window, total)
            # the window's video frames: r s (its first, one-frame latent) .. r (e - 1)
            a, b = r * s, latent_to_frames(s, e, r)[1]
            lat = pipe.encode_frames(x[:, :, a:b])
            held = prev_end - s if k else 0
            if held:
                lat[:, :, :held] = pipe.encode_frames(tail[:, :, -(1 + r * (held - 1)):])
                boundaries.append(latent_to_frames(prev_end, e, r)[0])
            video = pipe.decode_latents(lat)
            parts.append(video if k == 0 else video[:, :, 1 + r * (held - 1):])
            tail, prev_end = video, e
        pixel_frames = to_uint8(torch.cat(parts, dim=2))
        rows.append({
            "caption": cap, "boundaries": boundaries,
            "ground_truth": boundary_change_ratio(gt, boundaries)["ratio"],
            "latent": boundary_change_ratio(latent_frames, boundaries)["ratio"],
            "pixel": boundary_change_ratio(pixel_frames, boundaries)["ratio"],
        })
        print(f"  VAE seams {cap!r}: {rows[-1]}", flush=True)
    return {"rows": rows, **{k: mean(r[k] for r in rows) for k in ("ground_truth", "latent", "pixel")}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="pipeline folder")
    p.add_argument("--modes", nargs="+", default=["window"], choices=("window", "fuse", "keyframes", "causal"),
                   help="causal: vidiff.pipelines.streaming.iter_causal (a DiT trained with attention='causal')")
    p.add_argument("--chunk", type=int, default=1, help="causal mode: latent frames per chunk")
    p.add_argument("--overlap-space", default="latent", choices=("latent", "pixel"))
    p.add_argument("--window", type=int, help="latent frames per window (default: the model's clip length)")
    p.add_argument("--overlap", type=int, default=None,
                   help="latent frames shared by consecutive windows (default: the pipeline's for each mode)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance of the long videos (default: the model's); the 17-frame "
                        "reference keeps the model's default")
    p.add_argument("--context-noise", type=float, default=None,
                   help="noise level t_c of each window's generated held frames (0 = clean; default: "
                        "vidiff.pipelines.long.default_context_noise, the model's level for window mode, 0 else)")
    p.add_argument("--history-guidance", type=float, default=1.0,
                   help="history guidance scale on each window's held frames (1 = off)")
    p.add_argument("--window-noise", default="repeat", choices=WINDOW_NOISES,
                   help="each window's initial noise: the first window's again, or a fresh draw")
    p.add_argument("--multiple", type=int, default=8, help="long length = multiple x (training length - 1) + 1")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--captions", type=int, default=len(DRIFT_CAPTIONS))
    p.add_argument("--pairs", type=int, default=len(SCHEDULE_PAIRS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 captions, 1 pair, 1 seed, 2x length")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "long_eval.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.captions, args.pairs, args.seeds, args.multiple = 2, 1, 1, 2
    check_captions()

    import torch

    from vidiff.pipelines import VideoPipeline

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    pipe = VideoPipeline.from_pretrained(args.model, device=args.device)
    report = {
        "model": os.path.abspath(args.model),
        "machine": machine_info(args.device),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "modes": {},
    }
    with torch.no_grad():
        report["vae_seams"] = vae_seams(pipe, args)
    for mode in args.modes:
        print(f"mode {mode}:", flush=True)
        report["modes"][mode] = evaluate_mode(pipe, mode, args)
        print(json.dumps(report["modes"][mode]["summary"], indent=2), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(report, fh, indent=2, default=float)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

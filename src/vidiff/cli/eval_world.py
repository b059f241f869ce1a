"""`vidiff eval world`: ground-truth checks of shapes-world videos against their captions."""

from __future__ import annotations

import argparse
import json
import math
import os

from vidiff.cli import CLIError, write_json_file

_SUMMARY = (
    ("color_acc", "colour", "{:.3f}"), ("shape_acc", "shape", "{:.3f}"), ("size_acc", "size", "{:.3f}"),
    ("motion_acc", "motion", "{:.3f}"), ("all_correct", "all", "{:.3f}"),
    ("persistence", "persist", "{:.3f}"), ("identity_drift", "drift", "{:.4f}"),
    ("jitter", "jitter", "{:.4f}"), ("background_flicker", "flicker", "{:.4f}"),
    ("background_match", "bg match", "{:.3f}"),
    ("first_frame_psnr", "PSNR1 dB", "{:.2f}"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "world",
        help="shapes-world checks: colour/shape/size/motion accuracy, persistence, jitter, flicker",
        description="Judge shapes-world videos against their captions with a weight-free tracker.\n"
        "Reads DIR/captions.jsonl (one JSON object per line: video, caption, optional image;\n"
        "paths relative to DIR; a video is a file or a folder of PNG frames).\n\n"
        "Without --videos, generate the videos first with a model (default: the shipped one), for\n"
        "each prompt (--prompts FILE, one per line, or --n captions sampled from a split) and seed.\n\n"
        "Examples:\n"
        "  vidiff eval world --videos outputs/world --json report.json\n"
        "  vidiff eval world --prompts prompts.txt --seeds 3 --json t2v.json\n"
        "  vidiff eval world --n 30 --split heldout --image-to-video --json i2v_heldout.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--videos", metavar="DIR", help="folder with captions.jsonl and the videos")
    p.add_argument("--json", metavar="OUT", default=None, help="write the report here (default: DIR/world_report.json)")
    g = p.add_argument_group("generate, then evaluate (when --videos is not given)")
    g.add_argument("--model", help="pipeline folder (default: the shipped world model)")
    g.add_argument("--prompts", metavar="FILE", help="prompts, one per line (# starts a comment)")
    g.add_argument("--n", type=int, default=20, help="without --prompts: number of captions sampled from --split")
    g.add_argument("--split", default="train", choices=("train", "heldout"), help="split for sampled captions")
    g.add_argument("--seeds", type=int, default=1, help="seeds per prompt (0..K-1)")
    g.add_argument("--image-to-video", action="store_true",
                   help="condition on the first frame of a ground-truth render of each prompt")
    g.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    g.add_argument("--sampler", help="sampler (default: the model's)")
    g.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    g.add_argument("--save", metavar="DIR", help="also write the generated videos + captions.jsonl here")
    g.add_argument("--device", default="cpu")
    p.set_defaults(handler=run)


def _read_entries(directory: str) -> list[dict]:
    path = os.path.join(directory, "captions.jsonl")
    if not os.path.isdir(directory):
        raise CLIError(f"{directory}: no such directory")
    if not os.path.isfile(path):
        raise CLIError(f"{path}: not found (expected one JSON object per line with video and caption)")
    entries = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise CLIError(f"{path}:{number}: invalid JSON ({err.msg})") from err
            if not isinstance(entry, dict) or not isinstance(entry.get("video"), str) or not isinstance(entry.get("caption"), str):
                raise CLIError(f"{path}:{number}: needs string fields 'video' and 'caption'")
            entry["_line"] = f"{path}:{number}"
            entries.append(entry)
    if not entries:
        raise CLIError(f"{path}: no entries")
    return entries


def _load_frames(path: str):
    from vidiff.video import VideoReadError, read_frames_png, read_video

    if not os.path.exists(path):
        raise CLIError(f"{path}: video not found")
    try:
        return read_frames_png(path) if os.path.isdir(path) else read_video(path)
    except VideoReadError as err:
        raise CLIError(str(err)) from err


def _load_image(path: str):
    from vidiff.video import VideoReadError, read_image

    if not os.path.isfile(path):
        raise CLIError(f"{path}: image not found")
    try:
        return read_image(path)
    except VideoReadError as err:
        raise CLIError(str(err)) from err


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):
        return _json_safe(value.item())
    return value


def read_prompts(path: str) -> list[str]:
    """Prompts from a text file, one per line; blank lines and lines starting with # are skipped."""
    if not os.path.isfile(path):
        raise CLIError(f"{path}: prompts file not found")
    with open(path, encoding="utf-8") as f:
        prompts = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise CLIError(f"{path}: no prompts")
    return prompts


def sampled_prompts(n: int, split: str) -> list[str]:
    """`n` distinct captions of `split`, from fixed scene seeds (offset so they are not the
    training stream's first scenes)."""
    from vidiff.world import caption, sample_scene

    prompts, seed = [], 10_000_000
    while len(prompts) < n:
        text = caption(sample_scene(seed, split=split))
        if text not in prompts:
            prompts.append(text)
        seed += 1
    return prompts


def generate_and_evaluate(pipe, prompts: list[str], seeds: int, image_to_video: bool = False, save: str | None = None,
                          progress: bool = True, **generate_kwargs) -> list[dict]:
    """Generate every (prompt, seed) with `pipe` and judge it with the world metrics. With
    `image_to_video`, the first frame of a ground-truth render of the prompt (scene seed = seed)
    conditions the generation and first-frame PSNR is reported."""
    import warnings

    from tqdm.auto import tqdm

    from vidiff.metrics.world import evaluate_video
    from vidiff.world import render, scene_from_caption

    rows, entries = [], []
    jobs = [(p, s) for p in prompts for s in range(seeds)]
    for i, (prompt, seed) in enumerate(tqdm(jobs, desc="generate+eval", disable=not progress)):
        image = None
        if image_to_video:
            frames, _ = render(scene_from_caption(prompt, seed=seed), size=pipe.config.height,
                               frames=pipe.config.num_frames, fps=pipe.config.fps)
            image = frames[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = pipe(prompt, image=image, seed=seed, progress=False, **generate_kwargs)
        name = f"{i:05d}.mp4"
        rows.append(evaluate_video(out.frames, prompt, image=image, video=name))
        rows[-1]["seed"] = seed
        if save:
            from PIL import Image

            from vidiff.video import write_video

            os.makedirs(save, exist_ok=True)
            write_video(os.path.join(save, name), out.frames, fps=pipe.config.fps)
            entry = {"video": name, "caption": prompt, "seed": seed}
            if image is not None:
                entry["image"] = f"{i:05d}_first.png"
                Image.fromarray(image).save(os.path.join(save, entry["image"]))
            entries.append(entry)
    if save:
        from vidiff.modelio import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(e) + "\n" for e in entries)

        atomic_write(os.path.join(save, "captions.jsonl"), write)
    return rows


def _rows_from_model(args: argparse.Namespace) -> tuple[list[dict], dict]:
    from vidiff.cli.generate import load_pipeline

    pipe = load_pipeline(args.model, args.device)
    prompts = read_prompts(args.prompts) if args.prompts else sampled_prompts(args.n, args.split)
    kwargs = {"num_inference_steps": args.steps, "sampler": args.sampler, "guidance_scale": args.guidance}
    rows = generate_and_evaluate(pipe, prompts, args.seeds, args.image_to_video, args.save, **kwargs)
    settings = {"model": args.model or "shipped", "prompts": args.prompts or f"{args.n} sampled from {args.split}",
                "seeds": args.seeds, "image_to_video": args.image_to_video,
                "steps": args.steps or pipe.scheduler.num_inference_steps,
                "sampler": args.sampler or pipe.scheduler.sampler,
                "guidance": pipe.scheduler.guidance_scale if args.guidance is None else args.guidance}
    return rows, settings


def run(args: argparse.Namespace) -> int:
    from vidiff.machine import machine_info
    from vidiff.metrics.world import aggregate, shape_confusion

    if args.videos:
        rows, settings, where = _rows_from_folder(args), {"videos": args.videos}, args.videos
    else:
        rows, settings = _rows_from_model(args)
        where = settings["model"]
        if not args.json:
            raise CLIError("--json OUT is required when evaluating a model (there is no video folder to write into)")
    confusion = shape_confusion(rows)
    report = _json_safe({"aggregate": aggregate(rows), "shape_confusion": confusion, "settings": settings,
                         "machine": machine_info(args.device), "videos": rows})
    out = args.json or os.path.join(args.videos, "world_report.json")
    write_json_file(out, report, "the report")
    agg = report["aggregate"]
    cols = [(k, label, fmt) for k, label, fmt in _SUMMARY if agg.get(k) is not None]
    print(f"shapes-world checks of {agg['count']} videos from {where}")
    print("  ".join(f"{label:>8}" for _, label, _ in cols))
    print("  ".join(f"{fmt.format(agg[k]):>8}" for k, _, fmt in cols))
    print("shape right / asked:", format_confusion(confusion))
    print(f"report: {out}")
    return 0


def format_confusion(confusion: dict[str, dict[str, int]]) -> str:
    """One line: per asked shape, right / asked and the most frequent wrong answer."""
    parts = []
    for shape, found in confusion.items():
        asked = sum(found.values())
        if not asked:
            continue
        wrong = max((k for k in found if k != shape), key=lambda k: found[k])
        part = f"{shape} {found[shape]}/{asked}"
        parts.append(part + (f" (else {wrong} {found[wrong]})" if found[wrong] else ""))
    return ", ".join(parts)


def _rows_from_folder(args: argparse.Namespace) -> list[dict]:
    from vidiff.metrics.world import evaluate_video
    from vidiff.world.grammar import WorldGrammarError

    rows = []
    for entry in _read_entries(args.videos):
        frames = _load_frames(os.path.join(args.videos, entry["video"]))
        image = _load_image(os.path.join(args.videos, entry["image"])) if entry.get("image") else None
        try:
            rows.append(evaluate_video(frames, entry["caption"], image=image, video=entry["video"]))
        except WorldGrammarError as err:
            raise CLIError(f"{entry['_line']}: {err}") from err
        except ValueError as err:
            raise CLIError(f"{entry['_line']} ({entry['video']}): {err}") from err
    return rows

"""Can a world model keep an object spinning once the spin has started, or only not start it?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/spin_probe.py --model src/vidiff/assets/world-dit

In the shapes world "spins" turns an object 150-300 degrees per clip, clockwise or counter-
clockwise with equal odds, from a random start angle: from the caption alone the direction and
the phase are a coin toss. A model that cannot break that tie predicts their average, a round
blob that does not turn. This probe separates the two failures. For each caption of
benchmarks/prompts/world_spins.txt and `--seeds` scene seeds it renders the ground truth and
makes three videos of the clip length:

* `t2v`: text only (neither direction nor phase given);
* `i2v`: the render's first frame given (phase given, direction not);
* `continuation`: the render's first `--held` frames given (phase and direction given); with
  `--unconditional` under an empty caption and no guidance (does the model carry on a motion it
  sees, whatever "spins" means to it?);

and judges the frames after the held ones (`--held` - 1 onwards, for all three and for the
truth) with the world metrics: `spins` = the fitted orientation changes by >= 60 degrees over
them, `turned_with_truth` = it also turns the way the truth does, `square_kept` = a square is
found as a square, `rotation_ratio` = its turn over the truth's (1: the spin carried on exactly,
negative: reversed); `spins_by_shape` counts the spins per shape. `--speed S` renders the truth
spinning S times as fast as the world samples it (S = 0.5: 19-38 degrees per latent frame, below
half of a square's period; outside the training distribution, so best with `--unconditional`).
Writes JSON (default benchmarks/results/spin_probe.json).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from _probe import load_pipeline, probe_parser, write_report

from vidiff.cli.eval_world import read_prompts
from vidiff.metrics.world import evaluate_video
from vidiff.world.render import render
from vidiff.world.scene import scene_from_caption

PROMPTS = "benchmarks/prompts/world_spins.txt"
MODES = ("truth", "t2v", "i2v", "continuation")


def judge(frames: np.ndarray, caption: str) -> dict:
    """The first object's found shape, motion and fitted rotation (degrees) in `frames`."""
    obj = evaluate_video(frames, caption)["objects"][0]
    return {"found_shape": obj.get("found_shape"), "found_motion": obj.get("found_motion"),
            "rotation_deg": float(obj.get("rotation_deg") or 0.0), "shape": bool(obj.get("shape", False))}


def scaled_spin(scene, speed: float):
    """`scene` with every object's angular velocity multiplied by `speed`."""
    return dataclasses.replace(scene, objects=tuple(dataclasses.replace(o, spin=o.spin * speed) for o in scene.objects))


def main(argv: list[str] | None = None) -> None:
    parser = probe_parser(__doc__, "spin_probe.py", "--model src/vidiff/assets/world-dit --seeds 3")
    parser.add_argument("--seeds", type=int, default=3, help="scene and sampling seeds per caption")
    parser.add_argument("--held", type=int, default=5, help="leading frames given to the continuation (1 + 2k)")
    parser.add_argument("--unconditional", action="store_true",
                        help="continuation with an empty caption and guidance 1 (the held frames alone)")
    parser.add_argument("--speed", type=float, default=1.0, help="the truth's spin rate over the world's (default 1)")
    args = parser.parse_args(argv)
    model, pipe = load_pipeline(args.model)
    frames = pipe.config.num_frames
    captions = read_prompts(PROMPTS)
    rows = []
    for caption in captions:
        for seed in range(args.seeds):
            scene = scaled_spin(scene_from_caption(caption, seed=seed), args.speed)
            truth, _ = render(scene, size=pipe.config.height, frames=frames)
            videos = {
                "truth": truth,
                "t2v": pipe(caption, seed=seed, progress=False).frames,
                "i2v": pipe(caption, image=truth[0], seed=seed, progress=False).frames,
                "continuation": pipe("" if args.unconditional else caption, video=truth[: args.held], seed=seed,
                                     guidance_scale=1.0 if args.unconditional else None, progress=False).frames,
            }
            row = {"caption": caption, "seed": seed}
            for mode, video in videos.items():
                row[mode] = judge(video[args.held - 1:], caption)
            truth_turn = row["truth"]["rotation_deg"]
            sign = np.sign(truth_turn)
            for mode in MODES:
                r = row[mode]
                r["spins"] = r["found_motion"] == "spins"
                r["turned_with_truth"] = bool(r["spins"] and np.sign(r["rotation_deg"]) == sign)
                # a truth that did not turn (a spin too slow to measure) has no ratio
                r["rotation_ratio"] = r["rotation_deg"] / truth_turn if truth_turn else None
            rows.append(row)
            print(caption, seed, {m: (row[m]["found_shape"], round(row[m]["rotation_deg"])) for m in MODES}, flush=True)
    squares = [r for r in rows if " square " in r["caption"]]
    summary = {
        mode: {"spins": sum(r[mode]["spins"] for r in rows), "turned_with_truth": sum(r[mode]["turned_with_truth"] for r in rows),
               "square_kept": sum(r[mode]["shape"] for r in squares), "videos": len(rows), "squares": len(squares)}
        for mode in MODES
    }
    of_shape = {shape: [r for r in rows if f" {shape} " in r["caption"]] for shape in ("square", "triangle", "diamond")}
    by_shape = {shape: {mode: sum(r[mode]["spins"] for r in shaped) for mode in MODES} for shape, shaped in of_shape.items()}

    def median_ratio(rows_, mode):
        ratios = [r[mode]["rotation_ratio"] for r in rows_ if r[mode]["rotation_ratio"] is not None]
        return float(np.median(ratios)) if ratios else None

    ratio_by_shape = {shape: {mode: median_ratio(shaped, mode) for mode in MODES[1:]} for shape, shaped in of_shape.items()}
    for mode, s in summary.items():
        print(f"{mode:>13}: spins {s['spins']}/{s['videos']}, with the truth's direction {s['turned_with_truth']}, "
              f"square kept {s['square_kept']}/{s['squares']}")
    print("median turn over the truth's:", {shape: {m: round(v, 2) for m, v in d.items()} for shape, d in ratio_by_shape.items()})
    write_report(args.json, {"model": model, "settings": {"seeds": args.seeds, "held": args.held, "frames": frames,
                                                            "unconditional": args.unconditional, "speed": args.speed},
                             "summary": summary, "spins_by_shape": by_shape, "rotation_ratio_by_shape": ratio_by_shape,
                             "rows": rows}, "spin_probe.py", argv)


if __name__ == "__main__":
    main()

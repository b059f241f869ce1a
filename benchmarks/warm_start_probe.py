"""Would starting each window from its held frame, not from pure noise, keep the subject of a
prompt schedule? A negative experiment on the shipped model (issue 7), kept to be rerun.

Run: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/warm_start_probe.py --t0 1.0 0.9 0.8 --seeds 6

SDEdit-style warm start: every window after the first starts at time t0 < 1 from
`x_t0 = (1 - t0) z_last + t0 eps` (z_last: the window's last held latent, repeated over its new
frames; eps: the window's usual noise) and runs only the part of the sampler's time grid below
t0; t0 = 1 is the pipeline as shipped. This is not an option of `vidiff.pipelines.long`: the probe
swaps in its own window sampler (`_Run.sample`) for the run. The 4 prompt schedules of
`eval_long.py` (129 frames, the pair's two captions alternating every 16 frames) are judged per
segment with the world metrics: colour and shape right in every segment ("kept"), and the share
of segments whose motion is right. Writes benchmarks/results/long_sweep/warm_start_probe.json.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import eval_long  # noqa: E402 - the schedule pairs and their segmenting

from vidiff.machine import machine_info  # noqa: E402
from vidiff.metrics.world import evaluate_video  # noqa: E402
from vidiff.modelio import write_json  # noqa: E402
from vidiff.pipelines import VideoPipeline  # noqa: E402
from vidiff.pipelines import long as L  # noqa: E402


def warm_sampler(t0: float, shipped):
    """`shipped` (the pipeline's `_Run.sample`) with windows that hold generated frames started at
    t0 from their last one."""

    def sample(run, noise, prompt, given, given_index, generated=True):
        if t0 >= 1.0 or given is None or not generated:
            return shipped(run, noise, prompt, given, given_index, generated)
        sch = run.pipe.scheduler
        grid = sch.times

        def times(sampler, steps):
            full = grid(sampler, steps)
            return torch.cat([torch.tensor([t0], dtype=full.dtype), full[full < t0]])

        x = (1 - t0) * given[:, :, -1:].expand_as(noise) + t0 * noise
        sch.times = times
        try:
            return shipped(run, x, prompt, given, given_index, generated)
        finally:
            del sch.times

    return sample


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(os.path.dirname(HERE), "src", "vidiff", "assets", "world-dit"))
    p.add_argument("--t0", type=float, nargs="+", default=[1.0, 0.9, 0.8])
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--out", default=os.path.join(HERE, "results", "long_sweep", "warm_start_probe.json"))
    args = p.parse_args(argv)
    pipe = VideoPipeline.from_pretrained(args.model)
    frames = 1 + 8 * (pipe.config.num_frames - 1)
    shipped, report = L._Run.sample, {"machine": machine_info("cpu"), "model": args.model, "frames": frames, "t0": {}}
    try:
        for t0 in args.t0:
            L._Run.sample = warm_sampler(t0, shipped)
            pairs = []
            for first, then in eval_long.SCHEDULE_PAIRS:
                schedule = eval_long.alternating_schedule(first, then, 8, pipe.config.num_frames - 1)
                kept, motion = 0, []
                for seed in range(args.seeds):
                    out = L.generate_long(pipe, prompts=schedule, num_frames=frames, seed=seed)
                    judged = [evaluate_video(out.frames[a:b], cap) for cap, a, b in eval_long.schedule_runs(out.windows)]
                    kept += all(j["color_acc"] == 1.0 and j["shape_acc"] == 1.0 for j in judged)
                    motion += [j["motion_acc"] for j in judged]
                pairs.append({"captions": [first, then], "kept": kept, "videos": args.seeds,
                              "motion_acc": sum(motion) / len(motion)})
                print(f"t0 {t0}: {then!r}: kept {kept}/{args.seeds}, motion {pairs[-1]['motion_acc']:.2f}", flush=True)
            report["t0"][str(t0)] = {"pairs": pairs, "kept": sum(q["kept"] for q in pairs),
                                     "videos": sum(q["videos"] for q in pairs),
                                     "motion_acc": sum(q["motion_acc"] for q in pairs) / len(pairs)}
    finally:
        L._Run.sample = shipped
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

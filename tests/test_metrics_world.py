import argparse
import dataclasses
import json
import math
import os

import numpy as np
import pytest

from vidiff.metrics.world import (
    METRIC_KEYS,
    aggregate,
    evaluate_video,
    evaluate_videos,
    first_frame_psnr,
    shape_confusion,
    size_growth,
)
from vidiff.world.dataset import frames_to_video_tensor
from vidiff.world.grammar import BACKGROUND_CONFLICTS, COLORS, DIRECTIONAL_MOTIONS, WorldGrammarError
from vidiff.world.render import render, render_batch
from vidiff.world.scene import caption, sample_scene, scene_from_caption


def _rendered(seeds, **kw):
    scenes = [sample_scene(s, split="any", **kw) for s in seeds]
    video, _ = render_batch(scenes, with_truth=False)
    return scenes, video


def _objects(rows, key):
    return [o[key] for r in rows for o in r["objects"]]


@pytest.mark.slow
def test_tracker_is_right_on_ground_truth_renders():
    scenes, video = _rendered(range(500))
    rows = [evaluate_video(v, caption(s)) for v, s in zip(video, scenes)]
    agg = aggregate(rows)
    for key in ("color_acc", "shape_acc", "size_acc", "motion_acc"):
        assert agg[key] >= 0.99, (key, agg)
    assert agg["persistence"] >= 0.99
    static = [r["background_flicker"] for r, s in zip(rows, scenes) if s.pan is None]
    assert len(static) > 300 and max(static) < 1e-3


def test_tracker_on_a_small_sample_and_report_contract():
    scenes, video = _rendered(range(40))
    images = [v[0] for v in video]
    report = evaluate_videos(list(video), [caption(s) for s in scenes], images=images)
    assert set(report) == {"aggregate", "videos"}
    for row in [report["aggregate"], *report["videos"]]:
        for key in (*METRIC_KEYS, "first_frame_psnr"):
            assert key in row
    for row in report["videos"]:
        assert {"video", "caption"} <= set(row)
        assert row["first_frame_psnr"] == math.inf
        for key in ("color_acc", "shape_acc", "size_acc", "motion_acc", "all_correct"):
            assert 0.0 <= row[key] <= 1.0
    assert report["aggregate"]["all_correct"] >= 0.95
    json.dumps(report["aggregate"])
    assert "first_frame_psnr" not in evaluate_video(video[0], caption(scenes[0]))


def test_shape_confusion_counts_which_shape_was_found_for_which_was_asked():
    circle = render(scene_from_caption("a large red circle stays still on a black background", seed=0))[0]
    square = render(scene_from_caption("a large red square stays still on a black background", seed=0))[0]
    two = render(scene_from_caption("a large red square stays still and a small blue triangle moves up on a gray background", seed=1))[0]
    blank = np.zeros_like(circle)
    rows = [
        evaluate_video(square, "a large red square stays still on a black background"),
        evaluate_video(circle, "a large red square stays still on a black background"),  # asked square, got circle
        evaluate_video(blank, "a large red diamond stays still on a black background"),  # nothing drawn
        evaluate_video(two, "a large red square stays still and a small blue triangle moves up on a gray background"),
    ]
    got = shape_confusion(rows)
    assert got["square"] == {"circle": 1, "square": 2, "triangle": 0, "diamond": 0, "none": 0}
    assert got["diamond"]["none"] == 1 and sum(got["diamond"].values()) == 1
    assert got["triangle"]["triangle"] == 1 and sum(got["triangle"].values()) == 1
    assert sum(got["circle"].values()) == 0
    json.dumps(got)


def test_format_confusion_names_the_most_frequent_wrong_shape():
    from vidiff.cli.eval_world import format_confusion

    confusion = {
        "circle": {"circle": 3, "square": 0, "triangle": 0, "diamond": 0, "none": 0},
        "square": {"circle": 5, "square": 1, "triangle": 2, "diamond": 0, "none": 1},
        "triangle": {"circle": 0, "square": 0, "triangle": 0, "diamond": 0, "none": 0},
        "diamond": {"circle": 1, "square": 0, "triangle": 0, "diamond": 0, "none": 4},
    }
    assert format_confusion(confusion) == "circle 3/3, square 1/9 (else circle 5), diamond 0/5 (else none 4)"


def test_float_tensor_input_matches_uint8():
    scenes, video = _rendered(range(3))
    tensor = frames_to_video_tensor(video)  # [B,3,F,H,W] in [-1, 1]
    a = evaluate_videos(tensor, [caption(s) for s in scenes])
    b = evaluate_videos(list(video), [caption(s) for s in scenes])
    assert a["aggregate"] == b["aggregate"]


def _directional_seeds(n):
    seeds = []
    for s in range(5000):
        scene = sample_scene(s, split="any")
        if any(o.motion in DIRECTIONAL_MOTIONS for o in scene.objects):
            seeds.append(s)
        if len(seeds) == n:
            return seeds
    raise AssertionError("not enough directional scenes")


def test_time_reversal_breaks_directional_motion():
    scenes, video = _rendered(_directional_seeds(80))
    caps = [caption(s) for s in scenes]
    fwd = [evaluate_video(v, c) for v, c in zip(video, caps)]
    rev = [evaluate_video(v[::-1], c) for v, c in zip(video, caps)]

    def directional_acc(rows):
        ok = [o["motion"] for r in rows for o in r["objects"] if o["expected"].split()[-2] == "moves"]
        return np.mean(ok), len(ok)

    acc_f, n = directional_acc(fwd)
    acc_r, _ = directional_acc(rev)
    assert n >= 80 and acc_f >= 0.99 and acc_r < 0.05
    # ... and only motion moves: appearance is untouched by reversal
    agg_f, agg_r = aggregate(fwd), aggregate(rev)
    for key in ("color_acc", "shape_acc", "persistence"):
        assert agg_r[key] >= agg_f[key] - 0.02, key
    # size is judged at the start, so only objects that keep their size keep it under reversal
    steady = [o["size"] for r in rev for o in r["objects"] if o["expected"].split()[-1] not in ("grows", "shrinks")]
    assert np.mean(steady) >= 0.98
    assert abs(agg_r["jitter"] - agg_f["jitter"]) < 0.2 * agg_f["jitter"]


def test_colour_permutation_drops_colour_accuracy():
    scenes = []
    for s in range(40):
        scene = sample_scene(s, split="any")
        used = {o.color for o in scene.objects}
        free = [c for c in COLORS if c not in used and c not in BACKGROUND_CONFLICTS[scene.background]]
        recoloured = tuple(dataclasses.replace(o, color=free[i]) for i, o in enumerate(scene.objects))
        scenes.append((scene, dataclasses.replace(scene, objects=recoloured)))
    video, _ = render_batch([b for _, b in scenes], with_truth=False)
    rows = [evaluate_video(v, caption(a)) for v, (a, _) in zip(video, scenes)]
    agg = aggregate(rows)
    assert agg["color_acc"] < 0.05
    for key in ("shape_acc", "size_acc", "motion_acc"):  # still judged on the matched objects
        assert agg[key] >= 0.95, key


def test_brightness_flicker_raises_background_flicker():
    scenes, video = _rendered(range(30))
    caps = [caption(s) for s in scenes]
    rng = np.random.default_rng(0)
    flick = []
    for v in video:
        offset = rng.choice([-12, 12], size=len(v))[:, None, None, None]
        flick.append(np.clip(v.astype(int) + offset, 0, 255).astype(np.uint8))
    clean = aggregate([evaluate_video(v, c) for v, c in zip(video, caps)])
    noisy = aggregate([evaluate_video(v, c) for v, c in zip(flick, caps)])
    assert noisy["background_flicker"] > 5 * clean["background_flicker"] and noisy["background_flicker"] > 0.02
    for key in ("color_acc", "shape_acc", "size_acc", "motion_acc"):
        assert noisy[key] >= 0.95, key
    assert noisy["jitter"] < 1.5 * clean["jitter"]


def test_two_pixel_jitter_raises_trajectory_jitter():
    scenes, video = _rendered(range(30))
    caps = [caption(s) for s in scenes]
    rng = np.random.default_rng(0)
    shaken = []
    for v in video:
        shifts = rng.choice([-2, 2], size=(len(v), 2))
        shaken.append(np.stack([np.roll(f, tuple(d), axis=(0, 1)) for f, d in zip(v, shifts)]))
    clean = aggregate([evaluate_video(v, c) for v, c in zip(video, caps)])
    noisy = aggregate([evaluate_video(v, c) for v, c in zip(shaken, caps)])
    assert noisy["jitter"] > 4 * clean["jitter"]
    for key in ("color_acc", "shape_acc", "size_acc"):
        assert noisy[key] >= 0.95, key


def test_missing_object_and_identity_drift():
    scene = sample_scene(0, split="any", num_objects=1)
    frames, _ = render(scene)
    other = [c for c in COLORS if c != scene.objects[0].color and c not in BACKGROUND_CONFLICTS[scene.background]][0]
    spec = scene.spec()
    extra = dataclasses.replace(spec.objects[0], color=other)
    row = evaluate_video(frames, dataclasses.replace(spec, objects=(spec.objects[0], extra)))
    assert row["persistence"] == 0.5 and row["color_acc"] == 0.5 and row["all_correct"] == 0.0
    # recolour the object halfway through: colour drift appears
    half = frames.copy()
    obj = np.any(frames != frames[:, :1, :1], axis=-1)
    half[len(frames) // 2:][obj[len(frames) // 2:]] = (half[len(frames) // 2:][obj[len(frames) // 2:]] * 0.8).astype(np.uint8)
    base = evaluate_video(frames, caption(scene))["identity_drift"]
    assert evaluate_video(half, caption(scene))["identity_drift"] > base + 0.05


def test_size_growth_follows_the_rendered_area():
    """On renders the tracked area is the drawn area (anti-aliased coverage), so the growth
    equals the truth's median-area ratio; a still object keeps exactly 1."""
    for text in ("a large red circle stays still on a black background",
                 "a large blue square grows on a gray background",
                 "a small green triangle shrinks on a navy background"):
        frames, truth = render(scene_from_caption(text, seed=3))
        true_area = truth.objects[0].area
        expected = np.median(true_area[-4:]) / np.median(true_area[:4])
        assert size_growth(frames, text, 4) == pytest.approx(expected, rel=0.03), text
    still = "a large red circle stays still on a black background"
    assert size_growth(render(scene_from_caption(still, seed=3))[0], still, 4) == pytest.approx(1.0, abs=1e-6)
    clip = render(scene_from_caption(still, seed=3))[0]
    with pytest.raises(ValueError, match="clip must be in"):
        size_growth(clip, still, 0)
    assert size_growth(np.full_like(clip, 0), still, 4) is None  # no red object at all


def test_first_frame_psnr_closed_form():
    frames = np.full((3, 8, 8, 3), 100, np.uint8)
    image = np.full((8, 8, 3), 105, np.uint8)
    assert math.isclose(first_frame_psnr(frames, image), 10 * math.log10(255**2 / 25))
    with pytest.raises(ValueError, match="shape"):
        first_frame_psnr(frames, image[:4])


def test_bad_caption_raises_grammar_error():
    frames, _ = render(sample_scene(0))
    with pytest.raises(WorldGrammarError) as err:
        evaluate_video(frames, "a small purple circle moves left on a black background")
    assert err.value.unknown_words == ("purple",)


def _parser():
    from vidiff.cli import eval_world, world

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    world.register(sub)
    group = sub.add_parser("eval").add_subparsers()
    eval_world.register(group)
    return p


def _run(argv):
    args = _parser().parse_args(argv)
    return args.handler(args)


def test_cli_sample_then_eval(tmp_path, capsys):
    out = tmp_path / "world"
    assert _run(["world", "sample", "--n", "4", "--out", str(out), "--format", "png", "--frames", "9",
                 "--size", "48", "--seed", "3", "--split", "heldout"]) == 0
    lines = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and {"video", "caption", "seed", "ground_truth"} <= set(lines[0])
    truth = json.loads((out / lines[0]["ground_truth"]).read_text())
    assert len(truth["objects"][0]["centroid"]) == 9 and truth["size"] == 48
    report_path = tmp_path / "r.json"
    assert _run(["eval", "world", "--videos", str(out), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["aggregate"]["count"] == 4 and report["aggregate"]["all_correct"] == 1.0
    assert report["machine"]["cpu_count"] == os.cpu_count() and report["machine"]["device"] == "cpu"
    confusion = report["shape_confusion"]
    assert sum(sum(found.values()) for found in confusion.values()) == sum(len(r["objects"]) for r in report["videos"])
    assert all(found[shape] == sum(found.values()) for shape, found in confusion.items())  # renders: all right
    printed = capsys.readouterr().out
    assert "colour" in printed and "shape right / asked:" in printed


def test_cli_errors_name_the_path(tmp_path):
    from vidiff.cli import CLIError

    with pytest.raises(CLIError, match="captions.jsonl"):
        _run(["eval", "world", "--videos", str(tmp_path)])
    (tmp_path / "captions.jsonl").write_text(json.dumps({"video": "nope.mp4", "caption": "x"}) + "\n")
    with pytest.raises(CLIError, match="nope.mp4"):
        _run(["eval", "world", "--videos", str(tmp_path)])
    frames, _ = render(sample_scene(0))
    from vidiff.video import write_frames_png

    write_frames_png(tmp_path / "clip", frames)
    (tmp_path / "captions.jsonl").write_text(
        json.dumps({"video": "clip", "caption": "a small purple circle moves left on a black background"}) + "\n"
    )
    with pytest.raises(CLIError, match="purple"):
        _run(["eval", "world", "--videos", str(tmp_path)])
    (tmp_path / "captions.jsonl").write_text("{not json\n")
    with pytest.raises(CLIError, match="captions.jsonl:1"):
        _run(["eval", "world", "--videos", str(tmp_path)])


def test_wrong_background_is_noticed():
    for seed in range(100):
        scene = sample_scene(seed, split="any")
        if scene.background == "black" and scene.pan is None:
            break
    frames, _ = render(scene)
    right = evaluate_video(frames, scene.spec())
    wrong = evaluate_video(frames, dataclasses.replace(scene.spec(), background="checkered"))
    assert right["background_match"] > 0.95  # anti-aliased fringes are neither
    assert wrong["background_match"] < 0.1

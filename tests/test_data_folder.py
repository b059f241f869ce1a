"""Folder-of-videos dataset and the resumable loader: sampling, bad files, sharding, resume."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from vidiff.data import BadVideoWarning, ResumableLoader, VideoFolderDataset, shard_positions

pytestmark = pytest.mark.filterwarnings("ignore::vidiff.data.folder.BadVideoWarning")

SRC_FPS = 24
LEVEL = 8  # frame k of a clip is a flat gray of level LEVEL * k, so decoded frames give their index


def _write_clip(path, num_frames=30, size=32):
    from vidiff.video import write_video

    frames = np.stack([np.full((size, size, 3), LEVEL * k, dtype=np.uint8) for k in range(num_frames)])
    write_video(path, frames, fps=SRC_FPS)


def _frame_indices(video: torch.Tensor) -> list[int]:
    """[3, F, H, W] in [-1, 1] -> the source frame index each output frame came from."""
    levels = ((video + 1) * 127.5).mean(dim=(0, 2, 3))
    return [round(float(v) / LEVEL) for v in levels]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    lines = []
    for i in range(4):
        _write_clip(root / f"good{i}.mp4")
        lines.append({"video": f"good{i}.mp4", "caption": f"clip {i}"})
    good = (root / "good0.mp4").read_bytes()
    (root / "corrupt.mp4").write_bytes(good[: len(good) // 2])  # index (moov) lost
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.txt").write_text("these are not the frames you are looking for\n" * 20)
    lines += [{"video": n, "caption": "bad"} for n in ("corrupt.mp4", "empty.mp4", "notes.txt")]
    (root / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root


BAD = {"corrupt.mp4", "empty.mp4", "notes.txt"}


def test_fps_resampling_random_start_and_size(folder):
    ds = VideoFolderDataset(folder, num_frames=4, fps=8, size=(16, 24), caption_dropout=0.0)
    starts = set()
    for seed in range(6):
        sample = ds.get(1, torch.Generator().manual_seed(seed))
        video = sample["video"]
        assert video.shape == (3, 4, 16, 24) and video.dtype == torch.float32
        idx = _frame_indices(video)
        assert np.diff(idx).tolist() == [3, 3, 3]  # 24 fps -> 8 fps keeps every third frame
        assert 0 <= idx[0] and idx[-1] <= 29
        starts.add(idx[0])
        assert sample["caption"] == "clip 1"
    assert len(starts) > 1  # the clip start is random
    again = ds.get(1, torch.Generator().manual_seed(3))["video"]
    assert torch.equal(again, ds.get(1, torch.Generator().manual_seed(3))["video"])  # and seeded
    assert _frame_indices(ds[1]["video"])[0] == 0  # the deterministic clip starts at 0


def test_short_video_repeats_last_frame_and_caption_dropout(folder):
    ds = VideoFolderDataset(folder, num_frames=14, fps=8, size=(16, 16), caption_dropout=1.0)
    sample = ds.get(0, torch.Generator().manual_seed(0))
    idx = _frame_indices(sample["video"])
    assert idx[:10] == list(range(0, 30, 3)) and idx[10:] == [27] * 4  # 10 frames exist at 8 fps
    assert sample["caption"] == ""
    assert ds[0]["caption"] == "clip 0"  # no generator: no dropout


def test_bad_files_are_named_and_counted_at_probe_or_first_use(folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VideoFolderDataset(folder, num_frames=2, fps=8, size=(16, 16))
        # The zero-byte and text files fail the header probe; the truncated mp4 has a valid
        # header (moov first) and fails only when decoded, where the next good video replaces it.
        assert set(ds.bad_files) == {"empty.mp4", "notes.txt"} and len(ds) == 5
        corrupt = [name for name, _ in ds.entries].index("corrupt.mp4")
        sample = ds.get(corrupt, torch.Generator().manual_seed(0))
    assert sample["skipped"] == ["corrupt.mp4"] and sample["caption"] == "clip 0"  # wrapped around
    assert set(ds.bad_files) == BAD
    named = {str(w.message).split(":")[0] for w in caught if issubclass(w.category, BadVideoWarning)}
    assert {n.rsplit("/", 1)[-1] for n in named} == BAD
    assert "zero" in ds.bad_files["empty.mp4"] or "empty" in ds.bad_files["empty.mp4"]
    assert "not a video" in ds.bad_files["notes.txt"]


def test_training_on_folder_with_bad_files_reports_them(folder, tmp_path):
    """probe=False: the bad files are met while training (in a worker) and skipped, not fatal."""
    from vidiff.train import TrainConfig, Trainer
    from vidiff.train.logging import read_jsonl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadVideoWarning)
        ds = VideoFolderDataset(folder, num_frames=2, fps=8, size=(8, 8), probe=False)
        assert len(ds) == 7
        loader = ResumableLoader(ds, batch_size=2, seed=0, num_workers=1, timeout_s=60)
        seen_captions = []

        def loss_fn(m, batch, g):
            seen_captions.extend(batch["caption"])
            return (m(batch["video"].mean(dim=(2, 3, 4))) ** 2).mean()

        cfg = TrainConfig(steps=7, lr=1e-3, warmup_steps=0, ema_decay=0.0, log_every=7, checkpoint_every=100,
                          precision="fp32", device="cpu", progress=False, plot=False)
        result = Trainer(nn.Linear(3, 1), loss_fn, loader, cfg, tmp_path).fit()
    assert result.step == 7 and set(result.bad_files) == BAD
    assert "bad" not in seen_captions and len(seen_captions) == 14
    records = read_jsonl(tmp_path / "log.jsonl")
    assert {r["bad_file"] for r in records if "bad_file" in r} == BAD
    assert [r["bad_files"] for r in records if "loss" in r] == [3]


def test_a_video_that_decodes_too_slowly_is_skipped(folder, monkeypatch):
    import time

    import vidiff.video

    real = vidiff.video.read_video

    def slow_for_good2(path, **kw):
        if str(path).endswith("good2.mp4"):
            time.sleep(30)
        return real(path, **kw)

    monkeypatch.setattr(vidiff.video, "read_video", slow_for_good2)
    ds = VideoFolderDataset(folder, num_frames=2, fps=8, size=(8, 8), decode_timeout_s=0.3)
    i = [name for name, _ in ds.entries].index("good2.mp4")
    sample = ds.get(i, torch.Generator().manual_seed(0))
    assert sample["skipped"] == ["good2.mp4"] and sample["caption"] == "clip 3"
    assert "decoding took longer than 0.3 s" in ds.bad_files["good2.mp4"]


def test_captions_file_errors_name_the_line(tmp_path):
    (tmp_path / "captions.jsonl").write_text('{"video": "a.mp4", "caption": "x"}\n{"video": 3}\n')
    with pytest.raises(ValueError, match=r"captions.jsonl:2"):
        VideoFolderDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="caption file .*nothing/captions.jsonl"):
        VideoFolderDataset(tmp_path / "nothing")


class _Range(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def get(self, index, generator):
        return {"i": torch.tensor(index), "r": torch.rand((), generator=generator)}


def test_loader_resumes_at_the_exact_batch_across_epochs():
    def take(loader, n):
        it = iter(loader)
        return [next(it) for _ in range(n)]

    full = take(ResumableLoader(_Range(10), 3, seed=5), 9)  # 3 batches per epoch, 3 epochs
    first = ResumableLoader(_Range(10), 3, seed=5)
    head = take(first, 4)
    state = json.loads(json.dumps(first.state_dict()))  # it goes through JSON in checkpoints
    assert state["epoch"] == 1 and state["batch_in_epoch"] == 1
    second = ResumableLoader(_Range(10), 3, seed=5)
    second.load_state_dict(state)
    tail = take(second, 5)
    for a, b in zip(full, head + tail):
        assert torch.equal(a["i"], b["i"]) and torch.equal(a["r"], b["r"])
    epochs = [torch.cat([b["i"] for b in full[e * 3:(e + 1) * 3]]).tolist() for e in range(3)]
    assert all(len(set(e)) == 9 for e in epochs) and epochs[0] != epochs[1]  # reshuffled each epoch


def test_ranks_read_disjoint_shards_of_each_epoch():
    assert list(shard_positions(10, 1, 3)) == [1, 4, 7]
    per_rank = []
    for rank in range(3):
        it = iter(ResumableLoader(_Range(13), 2, seed=1, rank=rank, world_size=3))
        per_rank.append(torch.cat([next(it)["i"] for _ in range(2)]).tolist())
    flat = sum(per_rank, [])
    assert len(flat) == len(set(flat)) == 12  # 13 // 3 = 4 each, none shared
    with pytest.raises(ValueError, match="fewer than one batch"):
        ResumableLoader(_Range(4), 3, world_size=2)
    loader = ResumableLoader(_Range(13), 2, seed=1, rank=0, world_size=3)
    with pytest.raises(ValueError, match="world_size"):
        loader.load_state_dict({"epoch": 0, "batch_in_epoch": 0, "seed": 1, "world_size": 2})

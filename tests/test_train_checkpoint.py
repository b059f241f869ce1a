"""Checkpoint directories: round trip, atomicity, retention, and errors that name the file."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from vidiff.train.checkpoint import (
    CheckpointError,
    flatten_optimizer_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_temporaries,
    save_checkpoint,
    unflatten_optimizer_state,
)


def _optimizer_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.9))
    for _ in range(2):
        model(torch.randn(5, 3)).square().mean().backward()
        opt.step()
    return model, opt


def _save(root, step, model, opt=None, keep_last=0):
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    optim = get_optimizer_state_dict(model, opt) if opt is not None else None
    return save_checkpoint(root, step, model=model.state_dict(), ema={"w": torch.ones(3)}, optimizer=optim,
                           trainer_state={"ranks": [{"data": {"position": step}}]}, config={"train": {"lr": 1e-3}},
                           keep_last=keep_last)


def test_round_trip_restores_every_tensor_and_optimizer_exactly(tmp_path):
    model, opt = _optimizer_state()
    path = _save(tmp_path, 7, model, opt)
    assert path.name == "ckpt-00000007"
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "ema.safetensors", "model.safetensors", "optimizer.safetensors", "trainer_state.json"]
    ckpt = load_checkpoint(path)
    assert ckpt.step == 7 and ckpt.config == {"train": {"lr": 1e-3}}
    assert ckpt.trainer_state["ranks"][0]["data"]["position"] == 7
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.model[k], v)
    # The optimizer restored from the checkpoint takes the same next step as the original.
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    model2, _ = _optimizer_state()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    set_optimizer_state_dict(model2, opt2, ckpt.optimizer)
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9)
    x = torch.randn(5, 3)
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    for p1, p2 in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p1, p2)


def test_flatten_unflatten_optimizer_state_is_lossless():
    _, opt = _optimizer_state()
    sd = opt.state_dict()
    tensors, meta = flatten_optimizer_state(sd)
    json.dumps(meta)  # the remainder must be JSON
    back = unflatten_optimizer_state(tensors, json.loads(json.dumps(meta)))
    assert back["param_groups"] == sd["param_groups"]
    for idx, entries in sd["state"].items():
        for key, value in entries.items():
            assert torch.equal(back["state"][str(idx)][key], value)


def test_keep_last_and_latest_ignore_temporaries(tmp_path):
    model, _ = _optimizer_state()
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, model, keep_last=2)
    (tmp_path / ".tmp-ckpt-00000009-123-abc").mkdir()  # a crashed save
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000003", "ckpt-00000004"]
    assert latest_checkpoint(tmp_path).name == "ckpt-00000004"
    assert [p.name for p in remove_temporaries(tmp_path)] == [".tmp-ckpt-00000009-123-abc"]
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_failed_save_leaves_no_checkpoint(tmp_path):
    model, _ = _optimizer_state()
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path, 5, model=model.state_dict(), trainer_state={"bad": object()}, config={})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("victim", ["model.safetensors", "optimizer.safetensors", "ema.safetensors"])
def test_truncated_file_is_named(tmp_path, victim):
    model, opt = _optimizer_state()
    path = _save(tmp_path, 3, model, opt)
    data = (path / victim).read_bytes()
    (path / victim).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=victim):
        load_checkpoint(path)


def test_corrupt_safetensors_with_right_size_is_named(tmp_path):
    model, _ = _optimizer_state()
    path = _save(tmp_path, 3, model)
    target = path / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[8:40] = b"\x00" * 32  # break the JSON header, same length
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors.*not a readable safetensors"):
        load_checkpoint(path)


def test_missing_and_foreign_checkpoints_are_named(tmp_path):
    model, _ = _optimizer_state()
    path = _save(tmp_path, 3, model)
    (path / "ema.safetensors").unlink()
    with pytest.raises(CheckpointError, match="ema.safetensors is missing"):
        load_checkpoint(path)
    foreign = tmp_path / "diffusers_model"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="trainer_state.json is missing"):
        load_checkpoint(foreign)
    (foreign / "trainer_state.json").write_text('{"format": "other/2", "step": 1}')
    with pytest.raises(CheckpointError, match=r"trainer_state.json has format 'other/2'"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    # A safetensors file that some other program wrote, in place of ours
    from safetensors.torch import save_file

    good = _save(tmp_path, 4, model)
    size = (good / "model.safetensors").stat().st_size
    save_file({"x": torch.zeros(1)}, str(good / "model.safetensors"))
    state = json.loads((good / "trainer_state.json").read_text())
    state["files"]["model.safetensors"] = (good / "model.safetensors").stat().st_size
    (good / "trainer_state.json").write_text(json.dumps(state))
    assert size != state["files"]["model.safetensors"]
    with pytest.raises(CheckpointError, match="model.safetensors was not written by vidiff"):
        load_checkpoint(good)

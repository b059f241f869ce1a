"""Training checkpoints: one directory per step, written atomically, the last K kept.

Layout of `<root>/ckpt-00001000/`::

    config.json            the run's configuration (whatever the caller passes)
    model.safetensors      model weights (full, unsharded)
    ema.safetensors        EMA weights (when the run keeps an EMA)
    optimizer.safetensors  optimizer tensors keyed "<param name>/<state key>"; the param groups and
                           non-tensor state ride along as JSON in the file's metadata
    trainer_state.json     step, RNG states, data position, and the byte size of every file above

A checkpoint is written into `<root>/.tmp-ckpt-...`, every file and the directory fsynced, then
renamed into place, so a crash at any moment leaves either the whole checkpoint or none of it
under a `ckpt-*` name. Loading checks each file's size against `trainer_state.json` and parses each
safetensors file, and every failure names the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "checkpoint_name",
    "list_checkpoints",
    "latest_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "flatten_optimizer_state",
    "unflatten_optimizer_state",
    "remove_temporaries",
    "write_json_atomic",
]

CHECKPOINT_FORMAT = "vidiff.train.checkpoint/1"
_NAME = re.compile(r"^ckpt-(\d{8,})$")
_TUPLE_KEYS = ("betas",)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or not one of ours; the message names the file."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    model: dict[str, torch.Tensor]
    trainer_state: dict[str, Any]
    config: dict[str, Any]
    ema: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    extra: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint directories under `root`, oldest step first (temporaries ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def remove_temporaries(root: str | Path) -> list[Path]:
    """Delete `.tmp-*` / `.trash-*` leftovers of a crashed save; returns what was removed."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith((".tmp-ckpt-", ".trash-ckpt-")):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to `path` via a temporary file and rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _plain_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage and non-contiguous views: store private copies.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors `"<param>/<key>"` and a JSON-able remainder.

    Accepts both the name-keyed form of `torch.distributed.checkpoint.state_dict` and the
    index-keyed form of `Optimizer.state_dict()` (keys become strings).
    """
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, dict[str, Any]] = {}
    for param, entries in state["state"].items():
        rest[str(param)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}/{key}"] = value
                rest[str(param)][key] = {"tensor": f"{param}/{key}"}
            else:
                rest[str(param)][key] = {"value": value}
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"state": rest, "param_groups": groups}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten_optimizer_state`."""
    state: dict[str, dict[str, Any]] = {}
    for param, entries in meta["state"].items():
        state[param] = {k: (tensors[v["tensor"]] if "tensor" in v else v["value"]) for k, v in entries.items()}
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        for key in _TUPLE_KEYS:
            if isinstance(g.get(key), list):
                g[key] = tuple(g[key])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    model: dict[str, torch.Tensor],
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
    optimizer: dict[str, Any] | None = None,
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
    keep_last: int = 0,
) -> Path:
    """Write checkpoint `ckpt-<step>` under `root` atomically; keep the newest `keep_last` (0: all).

    `extra` adds more safetensors files (name without extension -> tensors), e.g. a LoRA adapter.
    If a checkpoint of this step already exists it is left as it is and returned.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    if final.exists():
        return final
    tmp = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        files: dict[str, int] = {}
        meta = {"format": CHECKPOINT_FORMAT}

        def put(name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
            path = tmp / name
            save_file(_plain_tensors(tensors), str(path), metadata={**meta, **(metadata or {})})
            _fsync_file(path)
            files[name] = path.stat().st_size

        put("model.safetensors", model)
        if ema is not None:
            put("ema.safetensors", ema)
        if optimizer is not None:
            opt_tensors, opt_meta = flatten_optimizer_state(optimizer)
            put("optimizer.safetensors", opt_tensors, {"optimizer": json.dumps(opt_meta)})
        for name, tensors in (extra or {}).items():
            put(f"{name}.safetensors", tensors)
        for name, data in (("config.json", config),):
            with open(tmp / name, "w") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            files[name] = (tmp / name).stat().st_size
        state = {**trainer_state, "format": CHECKPOINT_FORMAT, "step": step, "files": files}
        with open(tmp / "trainer_state.json", "w") as fh:
            json.dump(state, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last > 0:
        for old in list_checkpoints(root)[:-keep_last]:
            # Rename first so a half-deleted directory never looks like a checkpoint.
            trash = root / f".trash-{old.name}-{uuid.uuid4().hex[:6]}"
            os.rename(old, trash)
            shutil.rmtree(trash, ignore_errors=True)
    return final


def _load_tensors(path: Path, expected_size: int | None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise CheckpointError(f"checkpoint file {path} is truncated or altered: {size} bytes, expected {expected_size}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        tensors = load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for corrupt headers/data
        raise CheckpointError(f"checkpoint file {path} is not a readable safetensors file ({err})") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint file {path} was not written by vidiff's trainer (format {metadata.get('format')!r})")
    return tensors, metadata


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint directory (`ckpt-*`) back onto the CPU, verifying every file."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    state_path = path / "trainer_state.json"
    if not state_path.is_file():
        raise CheckpointError(f"{path} is not a vidiff training checkpoint: {state_path} is missing")
    try:
        state = json.loads(state_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint file {state_path} is not valid JSON ({err})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        got = state.get("format") if isinstance(state, dict) else None
        raise CheckpointError(f"checkpoint file {state_path} has format {got!r}, expected {CHECKPOINT_FORMAT!r}")
    files: dict[str, int] = state.get("files", {})
    for required in ("model.safetensors", "config.json"):
        if required not in files:
            raise CheckpointError(f"checkpoint file {state_path} does not list {required}")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint file {config_path} is missing")
    if config_path.stat().st_size != files["config.json"]:
        raise CheckpointError(f"checkpoint file {config_path} is truncated or altered")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint file {config_path} is not valid JSON ({err})") from None
    model, _ = _load_tensors(path / "model.safetensors", files["model.safetensors"])
    ema = None
    if "ema.safetensors" in files:
        ema, _ = _load_tensors(path / "ema.safetensors", files["ema.safetensors"])
    optimizer = None
    if "optimizer.safetensors" in files:
        opt_path = path / "optimizer.safetensors"
        tensors, metadata = _load_tensors(opt_path, files["optimizer.safetensors"])
        try:
            optimizer = unflatten_optimizer_state(tensors, json.loads(metadata["optimizer"]))
        except (KeyError, json.JSONDecodeError) as err:
            raise CheckpointError(f"checkpoint file {opt_path} has no valid optimizer metadata ({err})") from None
    extra = {}
    for name, size in files.items():
        stem = name.removesuffix(".safetensors")
        if name.endswith(".safetensors") and stem not in ("model", "ema", "optimizer"):
            extra[stem], _ = _load_tensors(path / name, size)
    return Checkpoint(
        path=path, step=int(state["step"]), model=model, trainer_state=state, config=config,
        ema=ema, optimizer=optimizer, extra=extra,
    )

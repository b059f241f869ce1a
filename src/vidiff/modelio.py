"""Atomic files and directories, and `config.json` + `model.safetensors` model folders.

Every writer in vidiff goes through here so that a crash never leaves a half-written file or
directory where a reader would take it for a finished one: files are written to a temporary name
in the same directory and `os.replace`d; directories are built under a temporary name and renamed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


_UMASK = os.umask(0)
os.umask(_UMASK)


class ModelLoadError(ValueError):
    """A model folder or file that cannot be loaded; the message names the file and the cause."""


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary sibling of `path` to write; when the block ends without an error it is
    synced and moved onto `path` in one rename, otherwise removed (no partial file either way).
    For writers that fill a file over time (a video written window by window)."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` then atomically move the result to `path` (no partial file on error)."""
    with atomic_file(path) as tmp:
        write(tmp)


def write_json(path: str | os.PathLike, data) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")

    atomic_write(path, write)


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file; a missing or malformed file raises ModelLoadError naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path}: file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path}: not valid JSON ({err})") from err


def config_from_file(from_dict: Callable[[dict], T], data: dict, path: str | os.PathLike) -> T:
    """`from_dict(data)` for a config read from the JSON file `path`; an unknown key or a
    rejected value raises ModelLoadError naming the file and the cause."""
    try:
        return from_dict(data)
    except ModelLoadError:
        raise
    except (TypeError, ValueError) as err:
        raise ModelLoadError(f"{os.fspath(path)}: {err}") from None


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[str]:
    """Build a directory under a temporary name; on success it replaces `path` in one rename.

    An existing `path` is moved aside first and deleted only after the new one is in place, so a
    crash at any point leaves either the old or the new directory complete (plus, at worst, a
    `.old-*`/`.tmp-*` sibling that no reader mistakes for a model).
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{os.path.basename(path)}-")
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(path):
        old = tempfile.mkdtemp(dir=parent, prefix=f".old-{os.path.basename(path)}-")
        os.rmdir(old)
        os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_state_dict(path: str | os.PathLike, state: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Save tensors to safetensors atomically (contiguous CPU copies; shared storage is fine)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=metadata))


def load_state_dict(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; missing, truncated or foreign files raise ModelLoadError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path}: file not found")
    try:
        return load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"{path}: not a readable safetensors file (truncated or foreign?): {err}") from err


def save_model(directory: str | os.PathLike, module: torch.nn.Module, config: dict, class_name: str) -> None:
    """Write `config.json` (with `_class_name`) and `model.safetensors` into `directory`."""
    os.makedirs(directory, exist_ok=True)
    write_json(os.path.join(directory, CONFIG_NAME), {"_class_name": class_name, **config})
    save_state_dict(os.path.join(directory, WEIGHTS_NAME), module.state_dict())


def load_model_files(directory: str | os.PathLike) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """Read a `save_model` folder: (class name, config without `_class_name`, state dict)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ModelLoadError(f"{directory}: model directory not found")
    config = read_json(os.path.join(directory, CONFIG_NAME))
    class_name = config.pop("_class_name", None)
    if class_name is None:
        raise ModelLoadError(f"{os.path.join(directory, CONFIG_NAME)}: no _class_name (not a vidiff model folder)")
    return class_name, config, load_state_dict(os.path.join(directory, WEIGHTS_NAME))


def load_weights_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """`load_state_dict(strict=True)` with an error that lists missing and unexpected keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:10]))
        raise ModelLoadError(f"{source}: weights do not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state)

"""Latent cache: encode a dataset once with the VAE, then train from the stored latents.

Layout of a cache directory::

    manifest.json            format, encoder_key, number of samples, shard list
    shard-00000.safetensors  tensors "latent.<i>" ([C_z, F_z, H_z, W_z] each); the captions (and
                             source names) of the shard as JSON in the file's metadata

The cache is keyed on `encoder_key`, a fingerprint of the encoder (see `encoder_fingerprint`):
building into a directory that holds a cache of the same key is a no-op; a different key rebuilds
it. The whole directory is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

__all__ = ["encoder_fingerprint", "build_latent_cache", "LatentCacheDataset", "LatentCacheError"]

CACHE_FORMAT = "vidiff.latent_cache/1"


class LatentCacheError(RuntimeError):
    """A latent cache is missing, corrupt or built with a different encoder; names the file."""


def encoder_fingerprint(config: Any, module: torch.nn.Module | None = None) -> str:
    """sha256 over the encoder's JSON config and (optionally) its weights, as hex (16 chars).

    Changing a config value or any weight changes the key, which invalidates the cache.
    """
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    if module is not None:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LatentCacheError(f"latent cache manifest {path} is not valid JSON ({err})") from None
    if manifest.get("format") != CACHE_FORMAT:
        raise LatentCacheError(f"{path} is not a vidiff latent cache manifest (format {manifest.get('format')!r})")
    return manifest


@torch.no_grad()
def build_latent_cache(
    samples: Iterable[dict[str, Any]],
    encode: Callable[[torch.Tensor], torch.Tensor],
    out_dir: str | Path,
    *,
    encoder_key: str,
    batch_size: int = 4,
    shard_size: int = 256,
    device: str | torch.device = "cpu",
) -> Path:
    """Encode `samples` ({"video": [C, F, H, W], "caption": str, optional "name"}) into a cache.

    `encode` maps a float video batch `[B, C, F, H, W]` in [-1, 1] to latents `[B, C_z, ...]`
    (e.g. a VAE's normalised-latent encoder). Videos in a batch must share a shape; a sample whose
    shape differs from the batch's first starts a new batch.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    existing = _read_manifest(out_dir) if out_dir.is_dir() else None
    if existing is not None and existing.get("encoder_key") == encoder_key and existing.get("complete"):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".tmp-{out_dir.name}-{uuid.uuid4().hex[:6]}")
    tmp.mkdir()
    shards: list[dict[str, Any]] = []
    pending_latents: list[torch.Tensor] = []
    pending_meta: list[dict[str, str]] = []

    def flush_shard() -> None:
        if not pending_latents:
            return
        name = f"shard-{len(shards):05d}.safetensors"
        tensors = {f"latent.{i}": t.contiguous() for i, t in enumerate(pending_latents)}
        save_file(tensors, str(tmp / name), metadata={"format": CACHE_FORMAT, "samples": json.dumps(pending_meta)})
        shards.append({"file": name, "count": len(pending_latents)})
        pending_latents.clear()
        pending_meta.clear()

    batch: list[dict[str, Any]] = []

    def encode_batch() -> None:
        if not batch:
            return
        video = torch.stack([s["video"] for s in batch]).to(device)
        latents = encode(video)
        if latents.shape[0] != len(batch):
            raise ValueError(f"encode returned {latents.shape[0]} latents for a batch of {len(batch)} videos")
        for s, z in zip(batch, latents.float().cpu()):
            pending_latents.append(z.clone())
            pending_meta.append({"caption": s.get("caption", ""), "name": str(s.get("name", ""))})
            if len(pending_latents) >= shard_size:
                flush_shard()
        batch.clear()

    try:
        for sample in samples:
            if batch and (len(batch) >= batch_size or sample["video"].shape != batch[0]["video"].shape):
                encode_batch()
            batch.append(sample)
        encode_batch()
        flush_shard()
        total = sum(s["count"] for s in shards)
        if total == 0:
            raise ValueError("no samples to cache")
        manifest = {"format": CACHE_FORMAT, "encoder_key": encoder_key, "num_samples": total,
                    "shards": shards, "complete": True}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out_dir.exists():
            trash = out_dir.with_name(f".trash-{out_dir.name}-{uuid.uuid4().hex[:6]}")
            os.rename(out_dir, trash)
            os.rename(tmp, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


class LatentCacheDataset(torch.utils.data.Dataset):
    """Samples {"latents": [C_z, F_z, H_z, W_z], "caption": str} read back from a cache.

    `encoder_key`, when given, must match the cache's (else LatentCacheError: rebuild the cache).
    Shards are opened lazily, or with `in_memory` all read at once into one tensor (one file read
    per shard instead of one per sample); `get(index, generator)` applies caption dropout.
    """

    def __init__(self, root: str | Path, *, encoder_key: str | None = None, caption_dropout: float = 0.0,
                 in_memory: bool = False):
        self.root = Path(root)
        manifest = _read_manifest(self.root)
        if manifest is None:
            raise LatentCacheError(f"no latent cache at {self.root} ({self.root / 'manifest.json'} is missing)")
        if encoder_key is not None and manifest["encoder_key"] != encoder_key:
            raise LatentCacheError(
                f"latent cache {self.root} was built with encoder {manifest['encoder_key']}, this run's encoder is "
                f"{encoder_key}; rebuild the cache"
            )
        if not 0.0 <= caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {caption_dropout}")
        self.encoder_key = manifest["encoder_key"]
        self.caption_dropout = caption_dropout
        self.index: list[tuple[str, int]] = []
        for shard in manifest["shards"]:
            self.index.extend((shard["file"], i) for i in range(shard["count"]))
        self._captions: dict[str, list[dict[str, str]]] = {}
        self.bad_files: dict[str, str] = {}
        self._latents: torch.Tensor | None = None
        if in_memory:
            self._latents = self._read_all()

    def __len__(self) -> int:
        return len(self.index)

    def _shard_meta(self, file: str) -> list[dict[str, str]]:
        if file not in self._captions:
            from safetensors import safe_open

            try:
                with safe_open(str(self.root / file), framework="pt") as fh:
                    self._captions[file] = json.loads((fh.metadata() or {})["samples"])
            except Exception as err:
                raise self._unreadable(file, err) from None
        return self._captions[file]

    def _unreadable(self, file: str, err: Exception) -> LatentCacheError:
        return LatentCacheError(f"latent cache shard {self.root / file} is unreadable ({err})")

    def _read_all(self) -> torch.Tensor:
        """Every sample's latents as one tensor `[N, C_z, F_z, H_z, W_z]`, in index order (the
        samples of a cache share one shape)."""
        from safetensors.torch import load_file

        out: torch.Tensor | None = None
        shard: dict[str, torch.Tensor] = {}
        current = None
        for position, (file, i) in enumerate(self.index):
            if file != current:
                try:
                    shard, current = load_file(str(self.root / file)), file
                except Exception as err:
                    raise self._unreadable(file, err) from None
            latent = shard.get(f"latent.{i}")
            if latent is None or (out is not None and latent.shape != out.shape[1:]):
                raise LatentCacheError(f"latent cache shard {self.root / file}: latent.{i} is missing or has "
                                       f"another shape than the cache's first sample")
            if out is None:
                out = latent.new_empty((len(self.index), *latent.shape))
            out[position] = latent
        return out

    def captions(self) -> list[str]:
        """Every sample's caption, in index order (read from the shards' metadata, not the latents)."""
        return [self._shard_meta(file)[i]["caption"] for file, i in self.index]

    def get(self, index: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        from safetensors import safe_open

        file, i = self.index[index]
        meta = self._shard_meta(file)[i]
        if self._latents is not None:
            latents = self._latents[index]
        else:
            try:
                with safe_open(str(self.root / file), framework="pt") as fh:
                    latents = fh.get_tensor(f"latent.{i}")
            except Exception as err:
                raise self._unreadable(file, err) from None
        caption = meta["caption"]
        if generator is not None and self.caption_dropout > 0:
            if float(torch.rand((), generator=generator, dtype=torch.float64)) < self.caption_dropout:
                caption = ""
        return {"latents": latents, "caption": caption}

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index, None)

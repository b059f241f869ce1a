"""Resumable, rank-sharded batch streams: the data side of exact training resume.

The trainer's data protocol is small: an iterable of batches with `state_dict()` /
`load_state_dict()` whose state is the position after the last batch handed out. Two
implementations:

* `ResumableLoader` over a map-style dataset: epoch e visits `randperm(N)` drawn from a generator
  seeded with (seed, e); rank r of R takes positions r, r+R, ... of it (a distinct shard per
  rank, equal lengths), cut into batches. State = (epoch, batches taken this epoch). Per-sample
  randomness (clip start, caption dropout) comes from a generator seeded with
  (seed, epoch, index), so it does not depend on worker count or scheduling. With per-sample
  `weights`, epoch e is instead N draws with replacement, P(i) = w_i / sum w (same generator),
  and a sample's generator also takes its position in the epoch (an index drawn twice gets two).
* `SeededBatchStream` for procedural data: batch p of rank r is `make_batch(generator, p)` with a
  generator seeded from (seed, rank, p). State = p.
"""

from __future__ import annotations

import hashlib
import signal
import warnings
from typing import Any, Callable, Iterator

import torch

__all__ = ["ResumableLoader", "SeededBatchStream", "derive_seed", "shard_positions"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python versions."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def shard_positions(n: int, rank: int, world_size: int) -> range:
    """Positions of an n-long order that rank `rank` reads: rank, rank + R, ... (equal counts)."""
    per_rank = n // world_size
    return range(rank, per_rank * world_size, world_size)


def _ignore_interrupts(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C: the trainer finishes its step (which may still need
    batches) and saves before stopping, so the workers must outlive the signal."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Keyed(torch.utils.data.Dataset):
    """Turns (index, seed) keys into `dataset.get(index, generator)` calls (or `dataset[index]`)."""

    def __init__(self, dataset: Any, keys: list[tuple[int, int]]):
        self.dataset = dataset
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Any:
        index, seed = self.keys[i]
        if hasattr(self.dataset, "get"):
            return self.dataset.get(index, torch.Generator().manual_seed(seed))
        return self.dataset[index]


class _Collate:
    def __init__(self, collate_fn: Callable[[list[Any]], Any] | None):
        self.collate_fn = collate_fn or torch.utils.data.default_collate

    def __call__(self, samples: list[Any]) -> tuple[Any, list[str]]:
        skipped: list[str] = []
        for s in samples:
            if isinstance(s, dict) and "skipped" in s:
                skipped.extend(s.pop("skipped"))
        return self.collate_fn(samples), skipped


class ResumableLoader:
    """Endless batches from a map-style dataset, sharded by rank, resumable to the exact batch.

    The dataset may define `get(index, generator)` to receive its per-sample generator, and may
    put a list of file names it had to skip under the sample's "skipped" key; those (and the
    dataset's own `bad_files`) are collected in `bad_files`. `weights` (`[N]`, >= 0, e.g. from
    `caption_sampling_weights`) makes each epoch N weighted draws with replacement instead of a
    permutation.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        timeout_s: float = 0.0,
        weights: torch.Tensor | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        n = len(dataset)
        per_rank = n // world_size
        if per_rank < batch_size:
            raise ValueError(
                f"dataset of {n} samples gives each of {world_size} ranks {per_rank} samples, "
                f"fewer than one batch of {batch_size}"
            )
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
            if weights.numel() != n:
                raise ValueError(f"weights has {weights.numel()} entries for a dataset of {n} samples")
            if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
                raise ValueError("weights must be finite, >= 0 and not all 0")
        self.weights = weights
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.collate = _Collate(collate_fn)
        self.timeout_s = timeout_s
        self.batches_per_epoch = per_rank // batch_size
        self.epoch = 0
        self.batch_in_epoch = 0
        self._skipped: dict[str, None] = {}

    @property
    def bad_files(self) -> list[str]:
        own = list(getattr(self.dataset, "bad_files", {}) or {})
        return list(dict.fromkeys(own + list(self._skipped)))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "seed": self.seed,
                "rank": self.rank, "world_size": self.world_size, "bad_files": self.bad_files}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("world_size", self.world_size) != self.world_size or state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"data state was saved with seed={state.get('seed')} world_size={state.get('world_size')}, "
                f"this loader has seed={self.seed} world_size={self.world_size}"
            )
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        for name in state.get("bad_files", []):
            self._skipped.setdefault(name, None)

    def _epoch_keys(self, epoch: int) -> list[tuple[int, int]]:
        n = len(self.dataset)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        if self.weights is not None:
            order = torch.multinomial(self.weights, n, replacement=True, generator=generator).tolist()
            positions = shard_positions(n, self.rank, self.world_size)
            return [(order[p], derive_seed(self.seed, epoch, order[p], p)) for p in positions]
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        mine = [order[p] for p in shard_positions(n, self.rank, self.world_size)]
        return [(i, derive_seed(self.seed, epoch, i)) for i in mine]

    def __iter__(self) -> Iterator[Any]:
        while True:
            keys = self._epoch_keys(self.epoch)
            start = self.batch_in_epoch * self.batch_size
            keys = keys[start : self.batches_per_epoch * self.batch_size]
            loader = torch.utils.data.DataLoader(
                _Keyed(self.dataset, keys), batch_size=self.batch_size, shuffle=False, drop_last=True,
                num_workers=self.num_workers, collate_fn=self.collate, timeout=self.timeout_s,
                worker_init_fn=_ignore_interrupts if self.num_workers > 0 else None,
            )
            for batch, skipped in loader:
                for name in skipped:
                    if name not in self._skipped:
                        self._skipped[name] = None
                        known = getattr(self.dataset, "bad_files", None)
                        if isinstance(known, dict):  # so next epoch's workers skip it without a retry
                            known.setdefault(name, "failed to decode in a DataLoader worker")
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0


class SeededBatchStream:
    """Endless procedural batches: batch p of rank r is `make_batch(generator, p)`.

    The generator is seeded with `derive_seed(seed, rank, p)`, so the stream is reproducible,
    distinct per rank, and resumes from the position alone.
    """

    def __init__(self, make_batch: Callable[[torch.Generator, int], Any], *, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.make_batch = make_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed, "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed", self.seed) != self.seed:
            warnings.warn(f"data stream resumed with seed {self.seed}, checkpoint had {state.get('seed')}")
        self.position = int(state["position"])

    def __iter__(self) -> Iterator[Any]:
        while True:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.rank, self.position))
            batch = self.make_batch(g, self.position)
            self.position += 1
            yield batch

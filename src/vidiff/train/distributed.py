"""Process groups, model wrapping (DDP / FSDP2) and small collectives, from torchrun's env vars.

`torchrun --nproc_per_node N -m vidiff train ...` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
and MASTER_PORT; `init_distributed()` reads them (a plain `python` run is world size 1 and needs
no process group). gloo serves CPU runs, nccl CUDA runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "init_distributed",
    "shutdown_distributed",
    "wrap_model",
    "unwrap_model",
    "all_reduce_mean",
    "all_reduce_max",
    "gather_objects",
    "barrier",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or (dist.is_available() and dist.is_initialized())


def init_distributed(device: str = "auto", backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this rank's device.

    device: "auto" (CUDA when present), "cpu" or "cuda". backend: None picks nccl for CUDA and
    gloo for CPU. Safe to call when a group is already initialised (it is reused).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if (world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ) and not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if dev.type == "cuda" else "gloo"),
                                rank=rank, world_size=world_size)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def shutdown_distributed() -> None:
    """Leave the process group. All ranks meet at a barrier first: a rank that tore its group
    down while another was still in a collective aborted gloo's worker threads ("terminate
    called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def wrap_model(
    model: nn.Module,
    mode: Literal["none", "ddp", "fsdp"],
    info: DistInfo,
    *,
    fsdp_units: Sequence[str] = (),
    find_unused_parameters: bool = False,
) -> nn.Module:
    """Wrap `model` (already on `info.device`) for data-parallel training.

    "ddp": DistributedDataParallel (every rank holds the full model; gradients all-reduced).
    "fsdp": FSDP2 `fully_shard`: parameters, gradients and optimizer state sharded across ranks.
    Each submodule whose class name is in `fsdp_units` (e.g. the transformer block class) becomes
    its own shard unit, so only one block's full weights are materialised at a time; then the root.
    "none" returns the model unchanged. DDP/FSDP need an initialised process group.
    find_unused_parameters: DDP only, for models where some parameters get no gradient in a step
    (e.g. an image branch on text-only batches); it costs an extra graph traversal per step.
    """
    if mode == "none":
        return model
    if not dist.is_initialized():
        raise RuntimeError(f"distributed={mode!r} needs a process group: launch with torchrun")
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        units = set(fsdp_units)
        for module in list(model.modules())[1:]:
            if type(module).__name__ in units:
                fully_shard(module)
        fully_shard(model)
        return model
    raise ValueError(f"distributed must be 'none', 'ddp' or 'fsdp', got {mode!r}")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 shards in place, so it is the module itself)."""
    return model.module if hasattr(model, "module") and isinstance(getattr(model, "module"), nn.Module) else model


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def all_reduce_max(value: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (a list of one without a group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()

"""The training loop: AdamW + warmup/cosine, accumulation, clipping, EMA, checkpoints, resume.

The trainer knows nothing about diffusion. It is given

* `model`: an `nn.Module` (moved to the device and wrapped for DDP/FSDP here);
* `loss_fn(model, batch, generator) -> scalar tensor`: `model` is the (possibly wrapped) module to
  call, `batch` is what the data yields (tensors moved to the device), and `generator` is the
  only random source the loss may use (noise, timesteps) — it is checkpointed, so resume is exact;
* `data`: an iterable of batches with `state_dict()` / `load_state_dict()` giving the position
  after the last batch handed out (see `vidiff.data.loader`); under torchrun each rank's data
  must read its own shard (build it with `rank=info.rank, world_size=info.world_size`);
* `validate_fn(trainer, step) -> dict | None`, called on every rank every `validate_every` steps.

Run layout under `out_dir`: `ckpt-XXXXXXXX/` checkpoints (see `checkpoint.py`), `log.jsonl`
(one record per `log_every` steps), `loss.png`. Only rank 0 writes files.
"""

from __future__ import annotations

import base64
import contextlib
import math
import random
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol

import numpy as np
import torch
from torch import nn

from vidiff.config import config_to_dict
from vidiff.data.loader import derive_seed
from vidiff.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_temporaries,
    save_checkpoint,
)
from vidiff.train.distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_mean,
    barrier,
    gather_objects,
    init_distributed,
    unwrap_model,
    wrap_model,
)
from vidiff.train.ema import EMA
from vidiff.train.logging import JsonlLog, plot_loss_curve
from vidiff.train.schedule import warmup_cosine_lr

__all__ = ["TrainConfig", "Trainer", "TrainResult", "TrainingDivergedError", "TrainData", "LossFn"]


class TrainData(Protocol):
    """What the trainer iterates: endless batches whose position survives a checkpoint.

    Optional attributes: `rank` (checked against this process's rank) and `bad_files` (names of
    skipped inputs, logged and counted).
    """

    def __iter__(self) -> Iterator[Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


LossFn = Callable[[nn.Module, Any, torch.Generator], torch.Tensor]


class TrainingDivergedError(RuntimeError):
    """The loss or gradient norm became NaN/inf; no checkpoint of that state was written."""

    def __init__(self, step: int, what: str, value: float, last_checkpoint: Path | None):
        self.step = step
        self.last_checkpoint = last_checkpoint
        kept = f"last good checkpoint: {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
        super().__init__(
            f"training diverged at step {step}: {what} is {value} ({kept}); "
            "lower the learning rate, raise warmup_steps or enable grad_clip"
        )


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings (the `[train]` table of a run's TOML)."""

    steps: int = 1000
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    grad_accum: int = 1
    ema_decay: float = 0.999  # 0 disables the EMA
    ema_warmup_steps: int = 0
    checkpoint_every: int = 500
    keep_last: int = 3  # 0 keeps every checkpoint
    log_every: int = 10
    validate_every: int = 0  # 0: never
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 autocast on CUDA; a CPU run always trains in fp32
    gradient_checkpointing: bool = False
    distributed: Literal["none", "ddp", "fsdp"] = "none"
    fsdp_units: tuple[str, ...] = ()  # module class names sharded as their own FSDP2 units
    find_unused_parameters: bool = False  # DDP: allow parameters without a gradient in a step
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True
    plot: bool = True  # redraw loss.png at each checkpoint and at the end

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas must be two values in [0, 1), got {self.betas}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}"),
            (self.keep_last >= 0, f"keep_last must be >= 0, got {self.keep_last}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.validate_every >= 0, f"validate_every must be >= 0, got {self.validate_every}"),
            (self.precision in ("fp32", "bf16"), f"precision must be 'fp32' or 'bf16', got {self.precision!r}"),
            (self.distributed in ("none", "ddp", "fsdp"), f"distributed must be 'none', 'ddp' or 'fsdp', got {self.distributed!r}"),
            (self.device in ("auto", "cpu", "cuda"), f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.betas = tuple(self.betas)
        self.fsdp_units = tuple(self.fsdp_units)


@dataclass
class TrainResult:
    step: int
    interrupted: bool
    last_checkpoint: Path | None
    last_loss: float | None
    bad_files: list[str] = field(default_factory=list)


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not isinstance(batch, str):
        items = [_to_device(v, device) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
    if hasattr(batch, "to") and callable(batch.to):  # e.g. a Conditioning dataclass with .to()
        try:
            return batch.to(device)
        except TypeError:
            return batch
    return batch


def _batch_size(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else None
    if isinstance(batch, dict):
        for v in batch.values():
            n = _batch_size(v)
            if n is not None:
                return n
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    return None


class Trainer:
    """Trains `model` on `loss_fn` over `data`; see the module docstring for the protocol."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: TrainData,
        cfg: TrainConfig,
        out_dir: str | Path,
        *,
        validate_fn: Callable[["Trainer", int], dict[str, float] | None] | None = None,
        run_config: dict[str, Any] | None = None,
        dist: DistInfo | None = None,
    ):
        for method in ("state_dict", "load_state_dict"):
            if not callable(getattr(data, method, None)):
                raise TypeError(f"data ({type(data).__name__}) must define {method}() so that resume is exact")
        self.cfg = cfg
        self.loss_fn = loss_fn
        self.data = data
        self.validate_fn = validate_fn
        self.out_dir = Path(out_dir)
        self.dist = dist or init_distributed(cfg.device)
        if self.dist.world_size > 1 and cfg.distributed == "none":
            raise ValueError(f"launched with {self.dist.world_size} processes but distributed='none'; set ddp or fsdp")
        data_rank = getattr(data, "rank", None)
        if data_rank is not None and data_rank != self.dist.rank:
            raise ValueError(f"data was built for rank {data_rank} but this process is rank {self.dist.rank}")
        self.device = self.dist.device
        self.run_config = run_config if run_config is not None else {"train": config_to_dict(cfg)}

        model = model.to(self.device)
        if cfg.gradient_checkpointing:
            if callable(getattr(model, "enable_gradient_checkpointing", None)):
                model.enable_gradient_checkpointing()
            elif isinstance(getattr(model, "gradient_checkpointing", None), bool):
                model.gradient_checkpointing = True
            else:
                raise ValueError(f"gradient_checkpointing=true but {type(model).__name__} has neither "
                                 "enable_gradient_checkpointing() nor a gradient_checkpointing flag")
        self.model = wrap_model(model, cfg.distributed, self.dist, fsdp_units=cfg.fsdp_units,
                                find_unused_parameters=cfg.find_unused_parameters)
        self.raw_model = unwrap_model(self.model)
        trainable = [(n, p) for n, p in self.raw_model.named_parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(f"{type(self.raw_model).__name__} has no trainable parameters")
        self.params = [p for _, p in trainable]
        groups = [
            {"params": [p for n, p in trainable if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in trainable if p.ndim < 2], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        self.ema = EMA(self.raw_model, cfg.ema_decay, cfg.ema_warmup_steps) if cfg.ema_decay > 0 else None
        self.generator = torch.Generator(device=self.device).manual_seed(derive_seed(cfg.seed, self.dist.rank, 7))
        self.step = 0
        self.last_checkpoint: Path | None = None
        self.use_bf16 = cfg.precision == "bf16" and self.device.type == "cuda"
        if cfg.precision == "bf16" and cfg.device == "cpu" and self.dist.is_main:
            warnings.warn("precision='bf16' applies on CUDA only; this CPU run trains in fp32", stacklevel=2)
        self._stop_signal: int | None = None
        self._log = JsonlLog(self.out_dir / "log.jsonl") if self.dist.is_main else None
        self._known_bad: set[str] = set()

    # ------------------------------------------------------------------------------------------
    # State
    # ------------------------------------------------------------------------------------------

    def _rank_state(self) -> dict[str, Any]:
        py_state = random.getstate()
        np_state = np.random.get_state()
        return {
            "generator": _b64(self.generator.get_state()),
            "torch_rng": _b64(torch.get_rng_state()),
            "cuda_rng": _b64(torch.cuda.get_rng_state(self.device)) if self.device.type == "cuda" else None,
            "python_random": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy_random": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "data": self.data.state_dict(),
        }

    def _load_rank_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(_unb64(state["generator"]))
        torch.set_rng_state(_unb64(state["torch_rng"]))
        if state.get("cuda_rng") and self.device.type == "cuda":
            torch.cuda.set_rng_state(_unb64(state["cuda_rng"]), self.device)
        version, internal, gauss = state["python_random"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = state["numpy_random"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        self.data.load_state_dict(state["data"])

    def _sharded(self) -> bool:
        return self.cfg.distributed == "fsdp"

    def _state_options(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True) if self._sharded() else StateDictOptions()

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (collective under DDP/FSDP; rank 0 writes)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        opts = self._state_options()
        if self._sharded():
            model_state = get_model_state_dict(self.raw_model, options=opts)
        else:
            model_state = self.raw_model.state_dict()
        optim_state = get_optimizer_state_dict(self.raw_model, self.optimizer, options=opts)
        ema_state = None
        if self.ema is not None:
            ema_state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in self.ema.state_dict().items()}
        ranks = gather_objects(self._rank_state())
        path = None
        if self.dist.is_main:
            trainer_state = {
                "world_size": self.dist.world_size,
                "ranks": ranks,
                "lr": self.optimizer.param_groups[0]["lr"],
                "bad_files": sorted(self._known_bad),
            }
            path = save_checkpoint(
                self.out_dir, self.step, model=model_state, ema=ema_state, optimizer=optim_state,
                trainer_state=trainer_state, config=self.run_config, keep_last=self.cfg.keep_last,
            )
            if self.cfg.plot:
                plot_loss_curve(self.out_dir / "log.jsonl", self.out_dir / "loss.png")
        barrier()
        self.last_checkpoint = self.out_dir / f"ckpt-{self.step:08d}"
        return path

    def load(self, path: str | Path) -> None:
        """Restore model, EMA, optimizer, RNGs and data position from a checkpoint directory."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        ckpt = load_checkpoint(path)
        ranks = ckpt.trainer_state.get("ranks", [])
        if len(ranks) != self.dist.world_size:
            raise CheckpointError(
                f"checkpoint file {ckpt.path / 'trainer_state.json'} was written by {len(ranks)} processes; "
                f"exact resume needs the same number, this run has {self.dist.world_size}"
            )
        model_file = ckpt.path / "model.safetensors"
        if self._sharded():
            set_model_state_dict(self.raw_model, ckpt.model, options=self._state_options())
        else:
            try:
                result = self.raw_model.load_state_dict(ckpt.model, strict=False)
            except RuntimeError as err:  # shape mismatches
                raise CheckpointError(f"checkpoint file {model_file} does not fit {type(self.raw_model).__name__}: {err}") from None
            if result.missing_keys or result.unexpected_keys:
                raise CheckpointError(
                    f"checkpoint file {model_file} does not fit {type(self.raw_model).__name__}: "
                    f"missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}"
                )
        if ckpt.optimizer is None:
            raise CheckpointError(f"checkpoint {ckpt.path} has no optimizer.safetensors; cannot resume training exactly")
        try:
            set_optimizer_state_dict(self.raw_model, self.optimizer, ckpt.optimizer, options=self._state_options())
        except (KeyError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint file {ckpt.path / 'optimizer.safetensors'} does not fit this model's optimizer ({err})") from None
        if self.ema is not None:
            if ckpt.ema is None:
                raise CheckpointError(f"checkpoint {ckpt.path} has no ema.safetensors but this run keeps an EMA")
            try:
                self.ema.load_state_dict(ckpt.ema)
            except (KeyError, RuntimeError) as err:
                raise CheckpointError(f"checkpoint file {ckpt.path / 'ema.safetensors'} does not fit this model ({err})") from None
        self._load_rank_state(ranks[self.dist.rank])
        self._known_bad = set(ckpt.trainer_state.get("bad_files", []))
        self.step = ckpt.step
        self.last_checkpoint = ckpt.path

    # ------------------------------------------------------------------------------------------
    # Loop
    # ------------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self._stop_signal = signum
        if self.dist.is_main:
            print(f"\nvidiff: {signal.Signals(signum).name} received; saving a checkpoint after step {self.step + 1}",
                  file=sys.stderr, flush=True)

    def _autocast(self):
        if self.use_bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _micro_context(self, last: bool):
        if self.cfg.distributed == "ddp" and not last:
            return self.model.no_sync()
        if self.cfg.distributed == "fsdp" and hasattr(self.model, "set_requires_gradient_sync"):
            self.model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def _note_bad_files(self) -> int | None:
        names = getattr(self.data, "bad_files", None)
        if names is None:
            return None
        names = [n for rank_names in gather_objects(list(names)) for n in rank_names]
        for name in names:
            if name not in self._known_bad:
                self._known_bad.add(name)
                if self._log is not None:
                    self._log.write({"step": self.step, "bad_file": name})
        return len(self._known_bad)

    def fit(self, resume: str | Path | bool | None = None) -> TrainResult:
        """Train until `cfg.steps`; `resume` = checkpoint dir, True/"latest" (newest in out_dir) or None.

        Returns early (with a checkpoint) after SIGINT/SIGTERM. Raises TrainingDivergedError on a
        non-finite loss or gradient norm, leaving the last good checkpoint in place.
        """
        cfg = self.cfg
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_temporaries(self.out_dir)
        barrier()
        if resume in (True, "latest"):
            resume = latest_checkpoint(self.out_dir)
            if resume is None and self.dist.is_main:
                print(f"vidiff: no checkpoint in {self.out_dir}; starting from step 0", file=sys.stderr)
        elif resume is False:
            resume = None
        if resume is not None:
            self.load(resume)
            if self._log is not None:
                self._log.truncate_after(self.step)
        elif list_checkpoints(self.out_dir):
            raise CheckpointError(
                f"{self.out_dir} already holds checkpoints ({list_checkpoints(self.out_dir)[-1].name}); "
                "resume from them or choose a new output directory"
            )

        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        bar = None
        if self.dist.is_main and cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True, file=sys.stderr)
        interrupted = False
        last_loss: float | None = None
        window_loss, window_steps, window_samples = 0.0, 0, 0
        window_start = time.perf_counter()
        try:
            data_iter = iter(self.data)
            self.model.train()
            while self.step < cfg.steps:
                lr = warmup_cosine_lr(self.step, base_lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                                      total_steps=cfg.steps, min_lr_ratio=cfg.min_lr_ratio)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=self.device)
                samples = 0
                for micro in range(cfg.grad_accum):
                    batch = _to_device(next(data_iter), self.device)
                    samples += _batch_size(batch) or 0
                    last = micro == cfg.grad_accum - 1
                    with self._micro_context(last):
                        with self._autocast():
                            loss = self.loss_fn(self.model, batch, self.generator)
                        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                            raise TypeError(f"loss_fn must return a scalar tensor, got {getattr(loss, 'shape', type(loss))}")
                        (loss.float() / cfg.grad_accum).backward()
                    loss_sum += loss.detach().float()
                loss_value = float(all_reduce_mean(loss_sum / cfg.grad_accum))
                if not math.isfinite(loss_value):
                    raise TrainingDivergedError(self.step + 1, "the loss", loss_value, self.last_checkpoint)
                max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
                if hasattr(grad_norm, "full_tensor"):
                    grad_norm = grad_norm.full_tensor()
                grad_norm = float(grad_norm)
                if not math.isfinite(grad_norm):
                    raise TrainingDivergedError(self.step + 1, "the gradient norm", grad_norm, self.last_checkpoint)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                if self.ema is not None:
                    self.ema.update(self.raw_model, self.step)
                last_loss = loss_value
                window_loss += loss_value
                window_steps += 1
                window_samples += samples * self.dist.world_size

                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    bad = self._note_bad_files()
                    record = {
                        "step": self.step, "loss": window_loss / window_steps, "lr": lr, "grad_norm": grad_norm,
                        "steps_per_s": window_steps / elapsed, "samples_per_s": window_samples / elapsed,
                    }
                    if bad is not None:
                        record["bad_files"] = bad
                    if self._log is not None:
                        self._log.write(record)
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{lr:.2e}",
                                        samples_s=f"{record['samples_per_s']:.1f}", refresh=False)
                    window_loss, window_steps, window_samples = 0.0, 0, 0
                    window_start = time.perf_counter()
                if bar is not None:
                    bar.update(1)

                if cfg.validate_every and self.step % cfg.validate_every == 0 and self.validate_fn is not None:
                    metrics = self.validate_fn(self, self.step)
                    if metrics and self._log is not None:
                        self._log.write({"step": self.step, **{f"val/{k}": v for k, v in metrics.items()}})

                stop_flag = torch.tensor(1.0 if self._stop_signal is not None else 0.0, device=self.device)
                stop = bool(all_reduce_max(stop_flag) > 0)
                if stop or self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save()
                if stop:
                    interrupted = True
                    break
        finally:
            if bar is not None:
                bar.close()
            for sig, old in handlers.items():
                signal.signal(sig, old)
        if self.dist.is_main and cfg.plot:
            plot_loss_curve(self.out_dir / "log.jsonl", self.out_dir / "loss.png")
        return TrainResult(step=self.step, interrupted=interrupted, last_checkpoint=self.last_checkpoint,
                           last_loss=last_loss, bad_files=sorted(self._known_bad))

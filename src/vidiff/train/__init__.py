"""Training: the Trainer loop, checkpoints, EMA, LR schedule, distributed wrapping, LoRA."""

from vidiff.train.checkpoint import Checkpoint, CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from vidiff.train.distributed import DistInfo, init_distributed, shutdown_distributed, unwrap_model, wrap_model
from vidiff.train.ema import EMA, ema_decay_at
from vidiff.train.lora import LoRAConfig, apply_lora, load_lora, merge_lora, save_lora
from vidiff.train.schedule import warmup_cosine_lr
from vidiff.train.trainer import TrainConfig, Trainer, TrainingDivergedError, TrainResult

__all__ = [
    "Checkpoint", "CheckpointError", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "save_checkpoint",
    "DistInfo", "init_distributed", "shutdown_distributed", "unwrap_model", "wrap_model",
    "EMA", "ema_decay_at",
    "LoRAConfig", "apply_lora", "load_lora", "merge_lora", "save_lora",
    "warmup_cosine_lr",
    "TrainConfig", "Trainer", "TrainingDivergedError", "TrainResult",
]

"""LoRA fine-tuning of attention projections, through peft, saved as one small safetensors file.

peft's `inject_adapter_in_model` swaps the targeted `nn.Linear`s for LoRA layers in place, so the
model keeps its own class and forward signature (no PeftModel wrapper between the trainer and the
denoiser contract). A LoRA layer computes  y = W x + b + (alpha / r) * B A x  with A: [r, in]
(random init) and B: [out, r] (zeros), so an adapter starts as the identity change.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["LoRAConfig", "apply_lora", "lora_state_dict", "save_lora", "load_lora", "merge_lora", "has_lora"]

LORA_FORMAT = "vidiff.lora/1"


@dataclass
class LoRAConfig:
    """rank r, scale alpha (the update is scaled by alpha / r), dropout on the adapter input, and
    the module names to adapt (matched against the end of each module's dotted name)."""

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    # vidiff.nn.attention's projections: fused q/k/v of self-attention, q and fused k/v of cross-attention
    target_modules: tuple[str, ...] = ("to_qkv", "to_q", "to_kv", "to_out")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("LoRA target_modules must name at least one module")
        self.target_modules = tuple(self.target_modules)


def _peft_config(cfg: LoRAConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=list(cfg.target_modules), bias="none")


def has_lora(model: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def apply_lora(model: nn.Module, cfg: LoRAConfig) -> nn.Module:
    """Add LoRA adapters to the target linears of `model` in place and freeze everything else."""
    from peft import inject_adapter_in_model

    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
             and any(n == t or n.endswith("." + t) for t in cfg.target_modules)]
    if not names:
        raise ValueError(f"no nn.Linear in {type(model).__name__} matches LoRA target_modules {list(cfg.target_modules)}")
    model = inject_adapter_in_model(_peft_config(cfg), model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    model._vidiff_lora_config = cfg  # read back by save_lora
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights (keys like `blocks.0.attn.to_q.lora_A.weight`)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def save_lora(model: nn.Module, path: str | Path) -> Path:
    """Write the adapter weights to `path` (a `.safetensors` file, or a directory -> lora.safetensors).

    The LoRAConfig rides along as JSON in the file's metadata, so the file alone reloads.
    """
    from safetensors.torch import save_file

    cfg = getattr(model, "_vidiff_lora_config", None)
    if cfg is None or not has_lora(model):
        raise ValueError(f"{type(model).__name__} has no LoRA adapters to save (call apply_lora first)")
    path = Path(path)
    if path.suffix != ".safetensors":
        path.mkdir(parents=True, exist_ok=True)
        path = path / "lora.safetensors"
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.clone() for k, v in lora_state_dict(model).items()}, str(tmp),
              metadata={"format": LORA_FORMAT, "config": json.dumps(asdict(cfg))})
    tmp.replace(path)
    return path


def load_lora(model: nn.Module, path: str | Path) -> nn.Module:
    """Add the adapters stored at `path` to `model` (injecting them first if needed)."""
    from peft import set_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "lora.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        weights = load_file(str(path))
    except Exception as err:
        raise ValueError(f"LoRA file {path} is not a readable safetensors file ({err})") from None
    if meta.get("format") != LORA_FORMAT:
        raise ValueError(f"LoRA file {path} was not written by vidiff.train.lora.save_lora (format {meta.get('format')!r})")
    cfg = LoRAConfig(**json.loads(meta["config"]))
    if not has_lora(model):
        model = apply_lora(model, cfg)
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", []) or []
    if unexpected:
        raise ValueError(f"LoRA file {path} has weights this model lacks, e.g. {unexpected[:3]}")
    return model


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W <- W + (alpha / r) B A) and remove the LoRA layers.

    The result is a plain model with the original module names, producing the adapted outputs.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in targets:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    if hasattr(model, "_vidiff_lora_config"):
        del model._vidiff_lora_config
    return model

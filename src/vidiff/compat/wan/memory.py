"""Memory options for running Wan 2.1 on a consumer GPU.

- `cast_transformer(model, dtype)`: weights in bf16/fp16 except the modules Wan keeps in fp32
  (time embedding, modulation tables, the affine cross-attention and image-token LayerNorms:
  diffusers' `_keep_in_fp32_modules` mapped to VideoDiT's names). Every Linear / Conv gets a
  forward pre-hook that casts its input to its own weight dtype, so fp32 and bf16 parts chain.
- `BlockOffload(model, device)`: the transformer's blocks stay in (pinned) CPU memory; each is
  copied to the GPU just before it runs (the next one prefetched on a side stream) and dropped
  right after, so GPU memory holds one or two blocks instead of all of them. Everything else
  (embeddings, head) lives on the device.
- Model offload (`WanVideoPipeline.enable_offload("model")`): each component (text encoder,
  image encoder, transformer, VAE) is moved to the GPU only while it is used. "blocks" adds
  `BlockOffload` and keeps the text encoder on the CPU (it encodes only the prompt's tokens).
- Chunked VAE decode is `CausalVAE3D.decode`'s default (one latent frame at a time with cached
  past frames), so peak decode memory does not grow with the clip length.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
OFFLOAD_MODES = ("none", "model", "blocks")

# VideoDiT module names (last path component) that Wan keeps in fp32 under bf16/fp16 weights.
FP32_MODULE_NAMES = ("time_embed", "extra_embed", "modulation", "head_modulation", "norm_cross", "norm_in", "norm_out")


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """'bf16' / 'fp16' / 'fp32' (or a torch dtype) -> torch dtype; ValueError naming the value."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(set(DTYPES))}")
    return DTYPES[name]


def _cast_input_hook(module: nn.Module, args: tuple):
    w = module.weight
    if args and isinstance(args[0], Tensor) and args[0].is_floating_point() and args[0].dtype != w.dtype:
        return (args[0].to(w.dtype),) + tuple(args[1:])
    return None


def is_fp32_module(name: str) -> bool:
    """Whether the module at dotted path `name` is one Wan keeps in fp32."""
    return any(part in FP32_MODULE_NAMES for part in name.split("."))


def cast_transformer(model: nn.Module, dtype: torch.dtype | str) -> nn.Module:
    """Cast a VideoDiT to `dtype` in place, keeping Wan's fp32 modules in fp32 (see module doc).

    Idempotent: input-casting hooks are installed once per Linear / Conv3d.
    """
    dtype = parse_dtype(dtype)
    for name, module in model.named_modules():
        keep = is_fp32_module(name)
        for p in module.parameters(recurse=False):
            p.data = p.data.to(torch.float32 if keep or not p.is_floating_point() else dtype)
        if isinstance(module, (nn.Linear, nn.Conv3d)) and not getattr(module, "_vidiff_cast_hook", False):
            module.register_forward_pre_hook(_cast_input_hook)
            module._vidiff_cast_hook = True
    return model


def module_dtype(model: nn.Module) -> torch.dtype:
    """The dtype most parameters have (the compute dtype of a partly-fp32 model)."""
    counts: dict[torch.dtype, int] = {}
    for p in model.parameters():
        counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return max(counts, key=counts.get) if counts else torch.float32


class BlockOffload:
    """Stream `model.blocks` one at a time from CPU to `device` during forward (see module doc).

    `enable()` moves the non-block parts to `device` and the blocks to (pinned) CPU memory;
    `disable()` removes the hooks and leaves the blocks on CPU. On a CUDA device the next
    block's copy overlaps the current block's compute (`prefetch=True`).
    """

    def __init__(self, model: nn.Module, device: str | torch.device, prefetch: bool = True):
        if not hasattr(model, "blocks"):
            raise ValueError(f"{type(model).__name__} has no `blocks`; block offload needs a VideoDiT")
        self.model, self.device = model, torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.prefetch = prefetch and self.cuda
        self.stream = torch.cuda.Stream(self.device) if self.prefetch else None
        self.handles: list = []
        self.host: list[list[tuple[Tensor, Tensor]]] = []  # per block: (param/buffer, host copy)
        self.pending: dict[int, list[Tensor]] = {}
        self.loads = 0  # number of block uploads (for tests and diagnostics)

    def _tensors(self, block: nn.Module) -> list[Tensor]:
        return list(block.parameters()) + list(block.buffers())

    def enable(self) -> "BlockOffload":
        blocks = self.model.blocks
        for name, child in self.model.named_children():
            if name != "blocks":
                child.to(self.device)
        for p in self.model.parameters(recurse=False):
            p.data = p.data.to(self.device)
        for i, block in enumerate(blocks):
            pairs = []
            for t in self._tensors(block):
                host = t.data.to("cpu")
                if self.cuda:
                    host = host.pin_memory()
                t.data = host
                pairs.append((t, host))
            self.host.append(pairs)
            self.handles.append(block.register_forward_pre_hook(self._make_pre(i)))
            self.handles.append(block.register_forward_hook(self._make_post(i)))
        return self

    def disable(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for pairs in self.host:
            for t, host in pairs:
                t.data = host
        self.host.clear()
        self.pending.clear()

    def _upload(self, i: int) -> list[Tensor]:
        return [host.to(self.device, non_blocking=self.cuda) for _, host in self.host[i]]

    def _make_pre(self, i: int):
        def pre(module, args):
            if i in self.pending:
                torch.cuda.current_stream(self.device).wait_stream(self.stream)
                copies = self.pending.pop(i)
                for c in copies:
                    c.record_stream(torch.cuda.current_stream(self.device))
            else:
                copies = self._upload(i)
            for (t, _), c in zip(self.host[i], copies):
                t.data = c
            self.loads += 1
            nxt = i + 1
            if self.prefetch and nxt < len(self.host) and nxt not in self.pending:
                self.stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self.stream):
                    self.pending[nxt] = self._upload(nxt)
            return None
        return pre

    def _make_post(self, i: int):
        def post(module, args, output):
            for t, host in self.host[i]:
                t.data = host
            return None
        return post

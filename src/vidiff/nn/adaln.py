"""Adaptive LayerNorm (AdaLN) modulation from a timestep embedding.

A shared projection maps the timestep embedding to `n` vectors per token group; each block adds
its own learned table (Wan's `scale_shift_table`) and reads off shift / scale / gate triples:
    h = LN(x) * (1 + scale) + shift           (modulate / ada_layer_norm)
    x = x + gate * sublayer(h)
The modulation may vary per frame: tensors are shaped [B, G, n, dim] with G = 1 (one timestep
per sample) or G = frames (per-frame timesteps); hidden states are viewed as [B, G, L, dim].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """`x * (1 + scale) + shift` (broadcasting)."""
    return torch.addcmul(shift, x, 1 + scale)


class _AdaLayerNorm(torch.autograd.Function):
    """y = LN(x) * (1 + scale) + shift, saving only x_hat = LN(x) and 1/std for backward.

    Autograd through layer_norm + addcmul would keep both x and x_hat; with
    g = dy * (1 + scale) the input gradient is
        dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))     (means over the last dim)
    and d shift = sum_L dy, d scale = sum_L dy * x_hat.
    """

    @staticmethod
    def forward(ctx, x: Tensor, shift: Tensor, scale: Tensor, eps: float) -> Tensor:
        ct = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for float64 input
        x_hat, _, rstd = torch.native_layer_norm(x.to(ct), (x.shape[-1],), None, None, eps)
        ctx.save_for_backward(x_hat, rstd, scale)
        ctx.x_dtype = x.dtype
        return torch.addcmul(shift.to(ct), x_hat, 1 + scale.to(ct))

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):
        x_hat, rstd, scale = ctx.saved_tensors
        dy = dy.to(x_hat.dtype)
        d_shift = dy.sum(-2, keepdim=True)
        d_scale = (dy * x_hat).sum(-2, keepdim=True)
        g = dy * (1 + scale.to(x_hat.dtype))
        mean_g, mean_gx = g.mean(-1, keepdim=True), (g * x_hat).mean(-1, keepdim=True)
        dx = g.sub_(mean_g).addcmul_(x_hat, mean_gx, value=-1).mul_(rstd)  # in place: one temporary
        return dx.to(ctx.x_dtype), d_shift.to(scale.dtype), d_scale.to(scale.dtype), None


def ada_layer_norm(x: Tensor, shift: Tensor, scale: Tensor, eps: float = 1e-6) -> Tensor:
    """`LN(x) * (1 + scale) + shift` with LN non-affine over the last dim, in float32 (float64 for
    float64 input).

    x: [B, G, L, D]; shift, scale: [B, G, 1, D] (or [B, 1, 1, D]). Returns the compute dtype
    (callers cast). Equal to
    `modulate(LayerNorm(x), shift, scale)` but keeps one [B, G, L, D] tensor for backward, not two.
    """
    if x.ndim != 4 or shift.shape != scale.shape or shift.ndim != 4 or shift.shape[-2] != 1:
        raise ValueError(f"ada_layer_norm expects x [B, G, L, D] and shift/scale [B, G, 1, D], got "
                         f"{tuple(x.shape)}, {tuple(shift.shape)}, {tuple(scale.shape)}")
    shift, scale = shift.expand(x.shape[0], x.shape[1], 1, x.shape[3]), scale.expand(x.shape[0], x.shape[1], 1, x.shape[3])
    return _AdaLayerNorm.apply(x, shift, scale, eps)


class ModulationTable(nn.Module):
    """A learned [n, dim] table added to the shared timestep modulation [B, G, n, dim].

    `forward(mod)` returns n tensors [B, G, 1, dim] (row i of `table + mod`), ready to broadcast
    against hidden states viewed as [B, G, L, dim]. Sums are taken in float32.
    """

    def __init__(self, n: int, dim: int):
        super().__init__()
        self.n, self.dim = n, dim
        self.table = nn.Parameter(torch.randn(n, dim) / math.sqrt(dim))

    def forward(self, mod: Tensor) -> tuple[Tensor, ...]:
        if mod.shape[-2:] != (self.n, self.dim):
            raise ValueError(f"modulation must end in ({self.n}, {self.dim}), got {tuple(mod.shape)}")
        return (self.table.float() + mod.float()).unsqueeze(-2).unbind(-3)

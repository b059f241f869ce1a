"""Normalisation layers that compute their statistics in at least float32 whatever the input dtype.

Under bf16 autocast a LayerNorm over a wide residual stream loses precision if its mean and
variance are taken in bf16; both layers here upcast, normalise, and cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """LayerNorm over the last dim: `(x - mean) / sqrt(var + eps) * weight + bias`.

    `affine=False` drops weight and bias (the AdaLN case, where modulation supplies them).
    Statistics are computed in float32 (float64 for float64 input) and the result is cast back to the input dtype.
    """

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        ct = torch.promote_types(x.dtype, torch.float32)
        w = None if self.weight is None else self.weight.to(ct)
        b = None if self.bias is None else self.bias.to(ct)
        return F.layer_norm(x.to(ct), (self.dim,), w, b, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, affine={self.weight is not None}"


class RMSNorm(nn.Module):
    """RMSNorm over the last dim: `x / sqrt(mean(x^2) + eps) * weight`.

    Used for query/key normalisation. Applied to the whole projected width (across heads,
    before the head split) it matches Wan's `rms_norm_across_heads`.
    """

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        ct = torch.promote_types(x.dtype, torch.float32)
        w = None if self.weight is None else self.weight.to(ct)
        return F.rms_norm(x.to(ct), (self.dim,), w, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, affine={self.weight is not None}"

"""Two-layer perceptrons used by transformer blocks and condition embedders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

_ACTS = {
    "gelu_tanh": lambda h: F.gelu(h, approximate="tanh"),
    "gelu": F.gelu,
    "silu": F.silu,
}


class _ActLinear(torch.autograd.Function):
    """y = act(h) W^T + b that saves h only and recomputes act(h) in backward.

    Autograd would keep both h (for the activation) and act(h) (for the weight gradient), two
    [.., hidden] tensors, the largest activations of a transformer block.
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None, act: str) -> Tensor:
        a = _ACTS[act](h)
        ctx.save_for_backward(h, weight)
        ctx.act, ctx.has_bias = act, bias is not None
        return F.linear(a, weight.to(a.dtype), None if bias is None else bias.to(a.dtype))

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):
        h, weight = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.shape[-1])
        d_bias = dy2.sum(0).to(weight.dtype) if ctx.has_bias else None
        a = _ACTS[ctx.act](h)  # recomputed, and freed before d_a is allocated
        d_weight = dy2.t().mm(a.reshape(-1, a.shape[-1]).to(dy.dtype)).to(weight.dtype)
        del a
        d_a = dy.matmul(weight.to(dy.dtype)).to(h.dtype)
        if ctx.act == "silu":
            d_h = torch.ops.aten.silu_backward(d_a, h)
        else:
            d_h = torch.ops.aten.gelu_backward(d_a, h, approximate="tanh" if ctx.act == "gelu_tanh" else "none")
        return d_h, d_weight, d_bias, None


class MLP(nn.Module):
    """`fc2(act(fc1(x)))`; `act` is "gelu_tanh" (transformer FFN, Wan), "gelu" (exact) or "silu".

    With `recompute_activation=True` (default) the activation is recomputed in backward instead of
    stored (same result, one hidden-width tensor less per layer during training).
    """

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None, act: str = "gelu_tanh",
                 recompute_activation: bool = True):
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"MLP act must be one of {sorted(_ACTS)}, got {act!r}")
        self.act, self.recompute_activation = act, recompute_activation
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        if torch.is_grad_enabled() and h.requires_grad:
            if self.recompute_activation:
                return _ActLinear.apply(h, self.fc2.weight, self.fc2.bias, self.act)
            return self.fc2(_ACTS[self.act](h))
        # Inference: activate in place, one hidden-width tensor instead of two.
        if self.act == "silu":
            h = F.silu(h, inplace=True)
        else:
            h = torch.ops.aten.gelu_(h, approximate="tanh" if self.act == "gelu_tanh" else "none")
        return self.fc2(h)

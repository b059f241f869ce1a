"""Rotary position embedding (RoPE) over a 3D (frame, row, column) token grid.

A head of width D is split into three bands, one per axis, exactly as Wan 2.1:
    h_dim = w_dim = 2 * (D // 6),   t_dim = D - h_dim - w_dim      (D = 128 -> 44, 42, 42)
Within a band of width d, channel pair (2i, 2i+1) rotates by angle  p * theta^(-2i / d)
where p is the token's integer position along that axis (interleaved pairs, the complex
convention). Because a rotation by p_q applied to q and by p_k applied to k gives
<R(p_q) q, R(p_k) k> = <q, R(p_k - p_q) k>, attention scores depend only on relative positions.

Angles are computed in float64 (as Wan does) and cos/sin are cast to the query dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """(t_dim, h_dim, w_dim) band widths for a head of `head_dim` channels (Wan's split)."""
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"RoPE needs an even head_dim >= 6, got {head_dim}")
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_angles_1d(positions: Tensor, dim: int, theta: float = 10000.0) -> Tensor:
    """Angles [P, dim/2] in float64: angle[p, i] = positions[p] * theta^(-2i / dim)."""
    if dim % 2:
        raise ValueError(f"a RoPE band must have an even width, got {dim}")
    inv_freq = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
    return positions.to(torch.float64)[:, None] * inv_freq[None, :]


def rope_3d(
    grid: tuple[int, int, int],
    head_dim: int,
    theta: float = 10000.0,
    offset: tuple[int, int, int] = (0, 0, 0),
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """cos, sin tables [F*H*W, head_dim/2] for tokens in (f, h, w) raster order.

    `grid` is (F, H, W) in tokens; `offset` shifts the positions on each axis (e.g. the index of
    the first frame of a window in a longer video). A grid (1, H, W) gives the spatial-only table
    (the frame band rotates by 0), (F, 1, 1) the temporal-only one.
    """
    f, h, w = grid
    dims = rope_axis_dims(head_dim)
    angles = []
    for n, d, o, shape in zip((f, h, w), dims, offset, ((f, 1, 1), (1, h, 1), (1, 1, w))):
        pos = torch.arange(o, o + n, device=device)
        a = rope_angles_1d(pos, d, theta).view(*shape, d // 2).expand(f, h, w, d // 2)
        angles.append(a)
    ang = torch.cat(angles, dim=-1).reshape(f * h * w, head_dim // 2)
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved channel pairs of `x` [..., N, D] by the angles behind cos/sin [N, D/2].

        out[2i]   = x[2i] cos - x[2i+1] sin
        out[2i+1] = x[2i] sin + x[2i+1] cos

    i.e. the pair (x[2i], x[2i+1]) read as a complex number is multiplied by cos + i sin. The
    product is taken as one complex multiplication (float32, or float64 for float64 input; ~100x
    faster than strided real arithmetic on CPU) and cast back to x's dtype.
    """
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    pairs = x.to(cdtype).unflatten(-1, (-1, 2))
    if pairs.storage_offset() % 2 or any(st % 2 for st in pairs.stride()[:-1]):
        pairs = pairs.contiguous()  # view_as_complex needs pair-aligned strides
    xc = torch.view_as_complex(pairs)
    rot = torch.complex(cos.to(cdtype), sin.to(cdtype))
    return torch.view_as_real(xc * rot).flatten(-2).to(x.dtype)

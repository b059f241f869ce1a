"""Embeddings: sinusoidal timestep / scalar features, 3D patch embedding and its inverse,
projections of text and image-encoder tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import MLP
from .norms import LayerNorm


def timestep_sinusoid(t: Tensor, dim: int, max_period: float = 10000.0, cos_first: bool = True) -> Tensor:
    """Sinusoidal features [..., dim] of a float tensor `t` (any shape).

        freq_i = max_period^(-i / (dim/2)),  i = 0 .. dim/2 - 1
        emb    = [cos(t freq), sin(t freq)]   (sin first when cos_first=False)

    Computed in float32; odd `dim` gets one zero channel appended. With cos_first this is
    diffusers' `Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)` used by Wan.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    arg = t.float()[..., None] * freqs
    parts = (torch.cos(arg), torch.sin(arg)) if cos_first else (torch.sin(arg), torch.cos(arg))
    emb = torch.cat(parts, dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedding(nn.Module):
    """sinusoid(t, freq_dim) -> Linear -> SiLU -> Linear: [...] -> [..., dim]."""

    def __init__(self, freq_dim: int, dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.linear_1 = nn.Linear(freq_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t: Tensor) -> Tensor:
        h = timestep_sinusoid(t, self.freq_dim).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(h)))


class ScalarEmbedding(nn.Module):
    """Named scalar conditions (fps, motion...) embedded like SVD's added time ids.

    Each [B] value becomes sinusoid(value, freq_dim) (raw value, so pass it in a range where the
    sinusoid periods make sense, e.g. fps or a 0..255 motion bucket); the features of all names,
    in config order, are concatenated and mapped by Linear -> SiLU -> Linear to [B, dim]. The last
    layer starts at zero so adding conditions to a trained model changes nothing at first.
    """

    def __init__(self, names: tuple[str, ...], freq_dim: int, dim: int):
        super().__init__()
        self.names, self.freq_dim = tuple(names), freq_dim
        self.linear_1 = nn.Linear(len(self.names) * freq_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, values: dict[str, Tensor], batch: int) -> Tensor:
        feats = []
        for name in self.names:
            if name not in values:
                raise ValueError(f"scalar condition {name!r} is missing from cond.extras (has {sorted(values)})")
            v = torch.as_tensor(values[name], device=self.linear_1.weight.device).float().reshape(-1)
            if v.numel() == 1:
                v = v.expand(batch)
            if v.shape != (batch,):
                raise ValueError(f"scalar condition {name!r} must have shape [{batch}], got {tuple(values[name].shape)}")
            feats.append(timestep_sinusoid(v, self.freq_dim))
        h = torch.cat(feats, dim=-1).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(h)))


class PatchEmbed3D(nn.Module):
    """Non-overlapping 3D patches -> tokens: Conv3d with kernel = stride = patch.

    forward(x [B, C, F, H, W]) -> (tokens [B, F'*H'*W', dim] in (f, h, w) raster order, (F', H', W'))
    F, H, W must be multiples of the patch size.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: tuple[int, int, int]):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        if x.ndim != 5:
            raise ValueError(f"expected video latents [B, C, F, H, W], got shape {tuple(x.shape)}")
        for size, p, axis in zip(x.shape[2:], self.patch_size, "FHW"):
            if size % p:
                raise ValueError(f"{axis}={size} is not a multiple of the patch size {self.patch_size}")
        h = self.proj(x)
        grid = tuple(h.shape[2:])
        # contiguous: a transposed residual stream would make every later op work on strided memory
        return h.flatten(2).transpose(1, 2).contiguous(), grid


def unpatchify(tokens: Tensor, grid: tuple[int, int, int], patch_size: tuple[int, int, int], channels: int) -> Tensor:
    """Inverse of the patch layout: [B, F'H'W', pt*ph*pw*C] -> [B, C, F'pt, H'ph, W'pw].

    Each token's features are ordered (pt, ph, pw, C), as Wan's output projection writes them.
    """
    b = tokens.shape[0]
    f, h, w = grid
    pt, ph, pw = patch_size
    x = tokens.reshape(b, f, h, w, pt, ph, pw, channels)
    return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, channels, f * pt, h * ph, w * pw)


class ImageTokenProjection(nn.Module):
    """Image-encoder tokens (e.g. CLIP) -> model width: LN -> Linear -> GELU -> Linear -> LN.

    Wan I2V's image embedder (its LayerNorms are affine with eps 1e-5, the GELU exact).
    """

    def __init__(self, image_dim: int, dim: int):
        super().__init__()
        self.norm_in = LayerNorm(image_dim, eps=1e-5)
        self.mlp = MLP(image_dim, image_dim, dim, act="gelu")
        self.norm_out = LayerNorm(dim, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm_out(self.mlp(self.norm_in(x)))

"""Multi-head attention through `F.scaled_dot_product_attention`, with the masks video needs.

Layout: hidden states are [B, N, dim]; heads are split as [B, heads, N, head_dim] for SDPA.
Boolean masks follow SDPA's convention: True = may attend.

Masks:
  - `block_causal_mask(F, L)`: tokens grouped in F frames of L tokens; a token attends to every
    token of its own frame and of earlier frames (full within a frame, causal across frames).
  - `key_padding_mask(mask)`: [B, L] True for real keys -> [B, 1, 1, L] for SDPA.

A query row whose keys are all masked out gets a zero output (not SDPA's NaN): the key padding
path handles that case explicitly, so an all-padding caption means "no text".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norms import RMSNorm
from .rope import apply_rope


def block_causal_mask(num_frames: int, tokens_per_frame: int, device=None) -> Tensor:
    """Bool [N, N], N = num_frames * tokens_per_frame: mask[i, j] = frame(j) <= frame(i)."""
    frame = torch.arange(num_frames, device=device).repeat_interleave(tokens_per_frame)
    return frame[None, :] <= frame[:, None]


def key_padding_mask(mask: Tensor) -> Tensor:
    """[B, L] (True/1 = real key) -> bool [B, 1, 1, L] broadcastable over heads and queries."""
    if mask.ndim != 2:
        raise ValueError(f"key padding mask must be [B, L], got shape {tuple(mask.shape)}")
    return mask.bool()[:, None, None, :]


def dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) v over [B, heads, N, d] tensors (SDPA).

    With a boolean key-padding mask, batch rows with no valid key return zeros.
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    if mask.dtype == torch.bool and mask.ndim == 4 and mask.shape[-2] == 1:
        # Key padding: keep SDPA away from all-masked rows (softmax over nothing is NaN).
        empty = ~mask.any(dim=-1, keepdim=True)  # [B, 1, 1, 1]
        if bool(empty.any()):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | empty)
            return out.masked_fill(empty, 0.0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, N, heads * d] -> [B, heads, N, d]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """[B, heads, N, d] -> [B, N, heads * d]."""
    return x.transpose(1, 2).flatten(2)


@dataclass
class LayerKVCache:
    """Keys and values of earlier tokens for one self-attention layer, `[B, heads, N_past, head_dim]`
    (None: nothing cached yet), for streaming generation.

    A `SelfAttention.forward` given the cache attends to `[cached keys; its own keys]` (its mask
    must cover both) and leaves its own keys/values in `new`; `append` adds them once they are
    final (e.g. a finished chunk), so a forward on tokens that are still being denoised does not
    change the cache.
    """

    keys: Tensor | None = None
    values: Tensor | None = None
    new: tuple[Tensor, Tensor] | None = None

    @property
    def length(self) -> int:
        """Cached tokens."""
        return 0 if self.keys is None else self.keys.shape[2]

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """`[cached; k]`, `[cached; v]` along the tokens; records `new = (k, v)`."""
        self.new = (k, v)
        if self.keys is None:
            return k, v
        if self.keys.shape[0] != k.shape[0]:
            raise ValueError(f"batch {k.shape[0]} does not match the key/value cache's batch {self.keys.shape[0]}")
        return torch.cat([self.keys, k], dim=2), torch.cat([self.values, v], dim=2)

    def append(self) -> None:
        """Add the last forward's keys/values to the cache."""
        if self.new is None:
            raise RuntimeError("nothing to append: no forward has run with this cache since the last append")
        k, v = self.new
        self.keys, self.values = self.extend(k, v)
        self.new = None

    def keep_last(self, tokens: int) -> None:
        """Evict all but the last `tokens` cached tokens."""
        if self.keys is not None and self.keys.shape[2] > tokens:
            self.keys, self.values = self.keys[:, :, -tokens:], self.values[:, :, -tokens:]


class SelfAttention(nn.Module):
    """Self-attention with a fused q/k/v projection, optional RMS-normalised q and k, and RoPE.

    q and k are RMS-normalised over the full projected width (across heads) before the head split,
    as in Wan 2.1. Parameters: `to_qkv` (dim -> 3*dim, [q; k; v] rows), `norm_q`, `norm_k`, `to_out`.

    forward(x [B, N, dim], rope=(cos, sin) [N, head_dim/2] or None, mask=None, cache=None) -> [B, N, dim]
    Callers that attend within groups (one frame, one spatial position) reshape x to
    [B * groups, group_len, dim] and pass the matching RoPE table. With a `LayerKVCache` the
    queries also attend to its cached keys (already rotated by their own positions), with a mask
    of shape [N, N_past + N].
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads = dim, num_heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None, mask: Tensor | None = None,
                cache: LayerKVCache | None = None) -> Tensor:
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k = self.norm_q(q), self.norm_k(k)
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.extend(k, v)
        return self.to_out(_merge_heads(dot_product_attention(q, k, v, mask)))


class CrossAttention(nn.Module):
    """Cross-attention from hidden states to context tokens (text), with optional image tokens.

    Parameters: `to_q`, `to_kv` (context_dim -> 2*dim, [k; v] rows), `norm_q`, `norm_k`, `to_out`;
    with `image_kv=True` also `to_image_kv` (dim -> 2*dim) and `norm_image_k` (Wan I2V's added
    key/value projections: image tokens, already projected to `dim`, form a second attention whose
    output is added to the text attention's before `to_out`; their keys get their own RMSNorm).

    forward(x [B, N, dim], context [B, L, context_dim], context_mask [B, L] bool or None,
            image [B, M, dim] or None) -> [B, N, dim]
    `context_mask` (True = real token) excludes padding keys; None attends to every token (Wan).
    """

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None, qk_norm: bool = True,
                 eps: float = 1e-6, image_kv: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads = dim, num_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim)
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.to_out = nn.Linear(dim, dim)
        if image_kv:
            self.to_image_kv = nn.Linear(dim, 2 * dim)
            self.norm_image_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        else:
            self.to_image_kv = None

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None,
                image: Tensor | None = None) -> Tensor:
        q = _split_heads(self.norm_q(self.to_q(x)), self.num_heads)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        k, v = _split_heads(self.norm_k(k), self.num_heads), _split_heads(v, self.num_heads)
        mask = None if context_mask is None else key_padding_mask(context_mask)
        out = dot_product_attention(q, k, v, mask)
        if image is not None:
            if self.to_image_kv is None:
                raise ValueError("image tokens were given but this CrossAttention has no image_kv projections")
            ki, vi = self.to_image_kv(image).chunk(2, dim=-1)
            ki, vi = _split_heads(self.norm_image_k(ki), self.num_heads), _split_heads(vi, self.num_heads)
            out = out + dot_product_attention(q, ki, vi)
        return self.to_out(_merge_heads(out))

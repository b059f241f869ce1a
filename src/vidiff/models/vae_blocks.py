"""Building blocks of the causal video VAE (and of the per-frame VAE, with temporal kernel 1).

The layout follows Wan 2.1's VAE so that its weights load unchanged: channel-first RMS norms,
SiLU residual blocks of causal 3x3x3 convolutions, per-frame single-head attention in the
middle, spatial resampling by 2D convolutions applied frame by frame, and temporal resampling
with a first-frame rule (frame 0 passes through alone, so `1 + f*k` frames map to `1 + k`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.nn.causal_conv import CausalConv3d, TemporalStreaming, conv3d_as_conv2d


def fold_frames(x: Tensor) -> Tensor:
    """`[B, C, F, H, W] -> [B*F, C, H, W]` (frames into the batch, frame-major within a sample)."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def unfold_frames(x: Tensor, batch: int) -> Tensor:
    """Inverse of `fold_frames`: `[B*F, C, H, W] -> [B, C, F, H, W]`."""
    bf, c, h, w = x.shape
    return x.reshape(batch, bf // batch, c, h, w).permute(0, 2, 1, 3, 4)


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channel axis (dim 1) of `[N, C, ...]`:

        y = x / max(||x||_2, 1e-12) * sqrt(C) * gamma (+ bias)

    i.e. `x / rms(x) * gamma` with the norm taken across channels at each position (Wan's
    `RMS_norm`). Computed in float32 for half-precision inputs.
    """

    def __init__(self, channels: int, bias: bool = False):
        super().__init__()
        self.channels = channels
        self.gamma = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, self.channels) + (1,) * (x.ndim - 2)
        y = F.normalize(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=1).to(x.dtype)
        y = y * (self.gamma * math.sqrt(self.channels)).view(shape)  # one full-size temporary, not two
        return y if self.bias is None else y + self.bias.view(shape)


class ResBlock(nn.Module):
    """`x -> conv2(drop(silu(norm2(conv1(silu(norm1(x))))))) + shortcut(x)`, causal convs."""

    def __init__(self, in_channels: int, out_channels: int, *, dropout: float, temporal_kernel: int, causal_padding: str):
        super().__init__()
        k = (temporal_kernel, 3, 3)
        self.norm1 = ChannelRMSNorm(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, k, causal_padding=causal_padding)
        self.norm2 = ChannelRMSNorm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_channels, out_channels, k, causal_padding=causal_padding)
        self.shortcut = (
            CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        # rebinding h before conv2 frees conv1's output while conv2 runs (one activation less at peak)
        h = self.dropout(F.silu(self.norm2(h)))
        h = self.conv2(h)
        return h.add_(self.shortcut(x))  # h is conv2's fresh output (its backward does not need it)


class FrameAttention(nn.Module):
    """Single-head self-attention over the pixels of each frame separately (so it is causal in
    time): `x + proj(softmax(q k^T / sqrt(C)) v)` with q, k, v from a 1x1 conv of `norm(x)`."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = ChannelRMSNorm(channels)
        self.to_qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        # start as the identity map: the residual path learns attention only if it helps
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: Tensor) -> Tensor:
        b, c, f, h, w = x.shape
        y = fold_frames(x)
        qkv = self.to_qkv(self.norm(y)).reshape(b * f, 3 * c, h * w).transpose(1, 2)
        q, k, v = qkv.unsqueeze(1).chunk(3, dim=-1)  # each [BF, 1, HW, C]
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b * f, c, h, w)
        return x + unfold_frames(self.proj(y), b)


class MidBlock(nn.Module):
    """ResBlock, optional FrameAttention, ResBlock at the lowest resolution."""

    def __init__(self, channels: int, *, attention: bool, dropout: float, temporal_kernel: int, causal_padding: str):
        super().__init__()
        kw = dict(dropout=dropout, temporal_kernel=temporal_kernel, causal_padding=causal_padding)
        self.res1 = ResBlock(channels, channels, **kw)
        self.attn = FrameAttention(channels) if attention else None
        self.res2 = ResBlock(channels, channels, **kw)

    def forward(self, x: Tensor) -> Tensor:
        x = self.res1(x)
        if self.attn is not None:
            x = self.attn(x)
        return self.res2(x)


class TemporalDownsample(TemporalStreaming, nn.Module):
    """Halve the frame count keeping frame 0 alone: `1 + 2k` frames -> `1 + k`.

        y_0 = x_0,   y_j = conv(x_{2j-2}, x_{2j-1}, x_{2j})  for j >= 1

    with `conv` a (3, 1, 1) kernel of stride 2 and no padding (Wan's `downsample3d` time conv).
    While streaming, frames not yet consumed by a window are kept for the next chunk.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.time_conv = nn.Conv3d(channels, channels, (3, 1, 1), stride=(2, 1, 1))
        self._pending: Tensor | None = None

    def reset_cache(self) -> None:
        self._pending = None

    def _conv(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu":  # see conv3d_as_conv2d: CPU Conv3d is the slow im2col kernel
            return conv3d_as_conv2d(x, self.time_conv.weight, self.time_conv.bias, (1, 1), (0, 0), time_stride=2)
        return self.time_conv(x)

    def forward(self, x: Tensor) -> Tensor:
        if not self.is_streaming:
            if x.shape[2] % 2 != 1:
                raise ValueError(f"TemporalDownsample needs 1 + 2k frames, got {x.shape[2]}")
            if x.shape[2] == 1:
                return x
            return torch.cat([x[:, :, :1], self._conv(x)], dim=2)
        outputs = []
        if self._pending is None:
            outputs.append(x[:, :, :1])
            pending = x
        else:
            pending = torch.cat([self._pending, x], dim=2)
        n = (pending.shape[2] - 1) // 2
        if n > 0:
            outputs.append(self._conv(pending[:, :, : 1 + 2 * n]))
        self._pending = pending[:, :, 2 * n :].clone()
        if not outputs:
            raise ValueError("TemporalDownsample got a chunk too short to produce a frame")
        return torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]


class TemporalUpsample(TemporalStreaming, nn.Module):
    """Double the frame count keeping frame 0 alone: `1 + k` frames -> `1 + 2k`.

        y_0 = x_0,   (y_{2j-1}, y_{2j}) = channel halves of causal_conv(x_1, ..., x_k)_j

    with `causal_conv` a causal (3, 1, 1) kernel producing 2C channels (Wan's `upsample3d`).
    Frame 0 never enters the convolution. While streaming, only the first chunk emits frame 0.
    """

    def __init__(self, channels: int, *, causal_padding: str):
        super().__init__()
        self.time_conv = CausalConv3d(channels, 2 * channels, (3, 1, 1), causal_padding=causal_padding)
        self._started = False

    def reset_cache(self) -> None:
        self._started = False

    def forward(self, x: Tensor) -> Tensor:
        parts = []
        if self.is_streaming and self._started:
            rest = x
        else:
            parts.append(x[:, :, :1])
            rest = x[:, :, 1:]
            self._started = self.is_streaming
        if rest.shape[2]:
            y = self.time_conv(rest)
            b, c2, f, h, w = y.shape
            y = y.view(b, 2, c2 // 2, f, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c2 // 2, 2 * f, h, w)
            parts.append(y)
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]


class Downsample(nn.Module):
    """2x spatial downsampling (pad right/bottom by one, 3x3 conv of stride 2, per frame), then
    optionally 2x temporal downsampling."""

    def __init__(self, channels: int, *, temporal: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)
        self.temporal = TemporalDownsample(channels) if temporal else None

    def forward(self, x: Tensor) -> Tensor:
        y = unfold_frames(self.conv(F.pad(fold_frames(x), (0, 1, 0, 1))), x.shape[0])
        return y if self.temporal is None else self.temporal(y)


class Upsample(nn.Module):
    """Optionally 2x temporal upsampling, then 2x nearest spatial upsampling and a 3x3 conv per
    frame (`channels -> out_channels`)."""

    def __init__(self, channels: int, out_channels: int, *, temporal: bool, causal_padding: str):
        super().__init__()
        self.temporal = TemporalUpsample(channels, causal_padding=causal_padding) if temporal else None
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.temporal is not None:
            x = self.temporal(x)
        b, dtype = x.shape[0], x.dtype
        half = dtype in (torch.float16, torch.bfloat16)  # some backends lack half nearest upsampling
        y = fold_frames(x.float() if half else x)
        y = F.interpolate(y, scale_factor=2.0, mode="nearest-exact").to(dtype)
        y = self.conv(y)  # rebinding frees the 4x-sized interpolation before the next step
        return unfold_frames(y, b)


class EncoderStage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, num_res_blocks: int, downsample: bool,
                 temporal: bool, dropout: float, temporal_kernel: int, causal_padding: str):
        super().__init__()
        kw = dict(dropout=dropout, temporal_kernel=temporal_kernel, causal_padding=causal_padding)
        self.res_blocks = nn.ModuleList(
            ResBlock(in_channels if i == 0 else out_channels, out_channels, **kw) for i in range(num_res_blocks)
        )
        self.downsample = Downsample(out_channels, temporal=temporal) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.res_blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class DecoderStage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, num_res_blocks: int, upsample: bool,
                 temporal: bool, dropout: float, temporal_kernel: int, causal_padding: str):
        super().__init__()
        kw = dict(dropout=dropout, temporal_kernel=temporal_kernel, causal_padding=causal_padding)
        self.res_blocks = nn.ModuleList(
            ResBlock(in_channels if i == 0 else out_channels, out_channels, **kw) for i in range(num_res_blocks)
        )
        # the upsampling conv halves the width, as in Wan 2.1
        self.upsample = (
            Upsample(out_channels, out_channels // 2, temporal=temporal, causal_padding=causal_padding)
            if upsample else None
        )

    def layers(self) -> list[nn.Module]:
        """The stage's layers in order (the decoder runs them flat, see `Decoder.forward`)."""
        return [*self.res_blocks, *([] if self.upsample is None else [self.upsample])]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers():
            x = layer(x)
        return x


class Encoder(nn.Module):
    """Video `[B, C_in, F, H, W]` -> moments `[B, 2*z_dim, F', H', W']` (mean and log-variance).

    Widths `base_dim * [1] + dim_mult`; stage i halves space after its blocks unless it is the
    last, and also halves time when `temporal_downsample[i]`.
    """

    def __init__(self, *, in_channels: int, base_dim: int, z_dim: int, dim_mult: tuple[int, ...],
                 num_res_blocks: int, temporal_downsample: tuple[bool, ...], mid_attention: bool,
                 dropout: float, temporal_kernel: int, causal_padding: str):
        super().__init__()
        kw = dict(dropout=dropout, temporal_kernel=temporal_kernel, causal_padding=causal_padding)
        k = (temporal_kernel, 3, 3)
        widths = [base_dim * m for m in (1, *dim_mult)]
        self.conv_in = CausalConv3d(in_channels, widths[0], k, causal_padding=causal_padding)
        last = len(dim_mult) - 1
        self.stages = nn.ModuleList(
            EncoderStage(widths[i], widths[i + 1], num_res_blocks=num_res_blocks, downsample=i != last,
                         temporal=i != last and temporal_downsample[i], **kw)
            for i in range(len(dim_mult))
        )
        self.mid = MidBlock(widths[-1], attention=mid_attention, **kw)
        self.norm_out = ChannelRMSNorm(widths[-1])
        self.conv_out = CausalConv3d(widths[-1], 2 * z_dim, k, causal_padding=causal_padding)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for stage in self.stages:
            x = stage(x)
        x = self.mid(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    """Latent `[B, z_dim, F', H', W']` -> video `[B, C_out, F, H, W]` (no clamping here).

    Widths `base_dim * ([dim_mult[-1]] + reversed(dim_mult))`; every stage but the last ends
    with an upsampling that halves the width; `temporal_upsample[i]` doubles time there too.
    """

    def __init__(self, *, out_channels: int, base_dim: int, z_dim: int, dim_mult: tuple[int, ...],
                 num_res_blocks: int, temporal_upsample: tuple[bool, ...], mid_attention: bool,
                 dropout: float, temporal_kernel: int, causal_padding: str):
        super().__init__()
        kw = dict(dropout=dropout, temporal_kernel=temporal_kernel, causal_padding=causal_padding)
        k = (temporal_kernel, 3, 3)
        widths = [base_dim * m for m in (dim_mult[-1], *reversed(dim_mult))]
        self.conv_in = CausalConv3d(z_dim, widths[0], k, causal_padding=causal_padding)
        self.mid = MidBlock(widths[0], attention=mid_attention, **kw)
        last = len(dim_mult) - 1
        self.stages = nn.ModuleList(
            DecoderStage(widths[i] if i == 0 else widths[i] // 2, widths[i + 1], num_res_blocks=num_res_blocks + 1,
                         upsample=i != last, temporal=i != last and temporal_upsample[i], **kw)
            for i in range(len(dim_mult))
        )
        self.norm_out = ChannelRMSNorm(widths[-1])
        self.conv_out = CausalConv3d(widths[-1], out_channels, k, causal_padding=causal_padding)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid(self.conv_in(z))
        # one flat loop, not stage(x): a stage call would keep its input alive through the whole
        # stage, a full-resolution activation more at the decoder's memory peak
        for layer in [layer for stage in self.stages for layer in stage.layers()]:
            x = layer(x)
        return self.conv_out(F.silu(self.norm_out(x)))

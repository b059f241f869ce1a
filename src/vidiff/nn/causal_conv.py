"""Causal 3D convolution that can run a clip in time chunks with a per-layer frame cache.

Causal in time: output frame t depends on input frames <= t only. A temporal kernel of size
k_t is given k_t - 1 frames of left padding and none on the right, so a whole clip produces as
many frames as it received.

Chunked (streaming) inference: inside `with streaming(model):` every `TemporalStreaming` layer
keeps the last frames it saw and prepends them to the next chunk instead of padding. Running a
clip chunk by chunk then gives the same result as running it whole (up to float summation order),
while activations only ever exist for one chunk: memory does not grow with the number of frames.

First-frame treatment, `causal_padding`:
- "zeros": the frames before the clip are zeros. This is what Wan 2.1 (AutoencoderKLWan) does and
  is required to load its weights. The first frame then sees an all-black "past" that no later
  frame sees, so the network learns a separate first-frame case (Wan treats the first latent frame
  as an image latent anyway).
- "replicate": the frames before the clip repeat the first frame, as if the scene had been still
  before recording started. The first frame is then coded like a static scene with no artificial
  black past (no dark fade-in artefact to unlearn when training from scratch), but pretrained Wan
  weights were trained with zeros and degrade with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CAUSAL_PADDINGS = ("zeros", "replicate")


class TemporalStreaming:
    """Mixin for layers that carry state from one time chunk to the next.

    Subclasses read `self.is_streaming` in `forward` and implement `reset_cache()`. Use the
    `streaming(module)` context manager rather than toggling layers by hand.
    """

    is_streaming: bool = False

    def begin_stream(self) -> None:
        self.is_streaming = True
        self.reset_cache()

    def end_stream(self) -> None:
        self.is_streaming = False
        self.reset_cache()

    def reset_cache(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


@contextlib.contextmanager
def streaming(module: nn.Module) -> Iterator[None]:
    """Run `module` chunk by chunk in time: every streaming layer starts with an empty cache
    and keeps its past frames between calls; caches are dropped on exit, even after an error."""
    layers = [m for m in module.modules() if isinstance(m, TemporalStreaming)]
    for layer in layers:
        layer.begin_stream()
    try:
        yield
    finally:
        for layer in layers:
            layer.end_stream()


def _triple(value: int | tuple[int, int, int], name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    if len(value) != 3:
        raise ValueError(f"{name} must be an int or a (t, h, w) triple, got {value!r}")
    return tuple(int(v) for v in value)  # type: ignore[return-value]


def conv3d_as_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    time_stride: int = 1,
) -> Tensor:
    """A Conv3d without temporal padding, computed as one Conv2d over frames.

        y[t] = sum_k W[:, :, k] * x[s t + k]  (2D conv each)  =  conv2d(cat_k x[s t + k], W')

    with the k_t shifted copies of the input stacked along channels (channel index k*C + c) and
    W' = W permuted to `[out, k_t * in, k_h, k_w]`. Same result as `F.conv3d` up to float
    summation order, but CPU builds of torch run Conv3d with a slow im2col kernel while Conv2d
    uses oneDNN: this is 4-10x faster forward and backward on the VAE's shapes.
    """
    b, c, f, h, w = x.shape
    out, _, kt, kh, kw = weight.shape
    frames = (f - kt) // time_stride + 1
    xs = x.permute(0, 2, 1, 3, 4)  # [B, F, C, H, W]
    if kt > 1 or time_stride > 1:
        span = time_stride * (frames - 1) + 1
        xs = torch.cat([xs[:, k : k + span : time_stride] for k in range(kt)], dim=2)
    w2 = weight.permute(0, 2, 1, 3, 4).reshape(out, kt * c, kh, kw)
    y = F.conv2d(xs.reshape(b * frames, kt * c, h, w), w2, bias, stride=stride, padding=padding)
    return y.reshape(b, frames, out, *y.shape[2:]).permute(0, 2, 1, 3, 4)


class CausalConv3d(TemporalStreaming, nn.Conv3d):
    """Conv3d over `[B, C, F, H, W]`, causal in time, "same" zero padding in space.

    The time axis gets `k_t - 1` frames of left padding (`causal_padding`: zeros or copies of the
    first frame); height and width get `k // 2` zeros on each side. Stride is 1 in time (temporal
    downsampling is a separate layer with its own first-frame rule); spatial stride is allowed.
    While streaming, the last `k_t - 1` input frames are cached and replace the padding of the
    next chunk. The weight has nn.Conv3d's shape `[out, in, k_t, k_h, k_w]`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        *,
        spatial_stride: int = 1,
        causal_padding: str = "zeros",
        bias: bool = True,
    ):
        kt, kh, kw = _triple(kernel_size, "kernel_size")
        if causal_padding not in CAUSAL_PADDINGS:
            raise ValueError(f"causal_padding must be one of {CAUSAL_PADDINGS}, got {causal_padding!r}")
        super().__init__(
            in_channels,
            out_channels,
            (kt, kh, kw),
            stride=(1, spatial_stride, spatial_stride),
            padding=(0, kh // 2, kw // 2),
            bias=bias,
        )
        self.causal_padding = causal_padding
        self.time_padding = kt - 1
        self._cache: Tensor | None = None

    def reset_cache(self) -> None:
        self._cache = None

    def _past(self, x: Tensor) -> Tensor:
        """The `time_padding` frames that precede the first frame of `x`."""
        b, c, _, h, w = x.shape
        if self.causal_padding == "zeros":
            return x.new_zeros(b, c, self.time_padding, h, w)
        return x[:, :, :1].expand(b, c, self.time_padding, h, w)

    def forward(self, x: Tensor) -> Tensor:
        if self.time_padding:
            if x.shape[2] == 0:
                raise ValueError("CausalConv3d got a chunk with 0 frames")
            past = self._cache if (self.is_streaming and self._cache is not None) else self._past(x)
            x = torch.cat([past, x], dim=2)
            if self.is_streaming:
                # clone so the cache does not pin the whole concatenated chunk in memory
                self._cache = x[:, :, -self.time_padding :].clone()
        if x.device.type == "cpu" and (torch.is_grad_enabled() or x.shape[2] == self.kernel_size[0]):
            # CPU Conv3d backward is slow in this torch build; stacked 2D convs train 4-10x faster.
            # Inference keeps F.conv3d (same speed, without the stacked copies' memory) except for
            # a single output frame, where CPU Conv3d takes an im2col workspace of ~k^3 frames
            # (the first chunk's peak in a chunked decode) and the stacked copy is only k_t frames.
            return conv3d_as_conv2d(x, self.weight, self.bias, self.stride[1:], self.padding[1:])
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, causal_padding={self.causal_padding!r}"

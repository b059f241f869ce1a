"""Training losses for the video VAEs.

    total = l1_weight * <|x_hat - x|>_w + mse_weight * <(x_hat - x)^2>_w
          + kl_weight * KL / (C * F * H * W)
          + temporal_weight * mean|(x_hat[t+1] - x_hat[t]) - (x[t+1] - x[t])|
          + adversarial_weight * (-mean D(x_hat))

``<e>_w = sum w e / sum w`` is a weighted mean with per-pixel weights ``w = 1 + edge_weight * E``,
where ``E`` [B, 1, F, H, W] is 1 in a band about ``EDGE_DILATION`` pixels wide (same frame)
around the input's edges and 0 elsewhere (`edge_mask`); ``edge_weight = 0`` gives the plain means. Objects
small against a flat background are a few percent of the pixels, so plain means let the
decoder round a 10-pixel square's corners for almost no loss; weighting the edges makes it pay.

The KL is the posterior's closed form summed over latent elements, averaged over the batch and
divided by the number of values per input clip: "nats per pixel value", on the same per-value
scale as the reconstruction means, so `kl_weight` does not depend on resolution or compression.
The temporal-difference term asks the reconstruction to move like the input (flicker shows up
there before it shows up in per-frame error). The adversarial term is a hook: pass any
discriminator module returning logits; training that discriminator (e.g. with
`discriminator_hinge_loss`) is the caller's job.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.models.vae import DiagonalGaussian


class VAELoss(NamedTuple):
    total: Tensor
    terms: dict[str, Tensor]  # detached, unweighted: l1, mse, kl, temporal, adversarial


def temporal_difference(x: Tensor) -> Tensor:
    """`x[:, :, t+1] - x[:, :, t]` for video `[B, C, F, H, W]` -> `[B, C, F-1, H, W]`."""
    return x[:, :, 1:] - x[:, :, :-1]


#: A pixel is on an edge when its largest channel change to the right neighbour plus that to the
#: lower neighbour exceeds this (pixel values in [-1, 1]: 0.1 is 5% of the range).
EDGE_THRESHOLD = 0.1
#: Edges are widened to this many pixels (a square max-pool window) in every frame.
EDGE_DILATION = 5


def edge_mask(x: Tensor, threshold: float = EDGE_THRESHOLD, dilation: int = EDGE_DILATION) -> Tensor:
    """Edge map ``E`` [B, 1, F, H, W] (0/1, float) of video `x` [B, C, F, H, W].

    ``e[h, w] = max_c |x[c, h, w+1] - x[c, h, w]| + max_c |x[c, h+1, w] - x[c, h, w]| > threshold``
    (the difference to a missing neighbour at the border is 0), then dilated by a
    `dilation` x `dilation` max-pool within each frame (`dilation` odd). Only the left / upper
    pixel of a differing pair is marked, so the band reaches one pixel further outside an
    object's left and top edges than outside its right and bottom ones.
    """
    if dilation < 1 or dilation % 2 == 0:
        raise ValueError(f"edge dilation must be an odd number >= 1, got {dilation}")
    b, c, f, h, w = x.shape
    frames = x.detach().transpose(1, 2).reshape(b * f, c, h, w)
    dx = F.pad((frames[..., :, 1:] - frames[..., :, :-1]).abs().amax(1, keepdim=True), (0, 1))
    dy = F.pad((frames[..., 1:, :] - frames[..., :-1, :]).abs().amax(1, keepdim=True), (0, 0, 0, 1))
    edges = F.max_pool2d((dx + dy > threshold).float(), dilation, stride=1, padding=dilation // 2)
    return edges.reshape(b, f, 1, h, w).transpose(1, 2)


def vae_loss(
    x: Tensor,
    recon: Tensor,
    posterior: DiagonalGaussian,
    *,
    l1_weight: float = 1.0,
    mse_weight: float = 0.0,
    kl_weight: float = 1e-3,
    temporal_weight: float = 0.0,
    edge_weight: float = 0.0,
    discriminator: nn.Module | None = None,
    adversarial_weight: float = 0.0,
) -> VAELoss:
    """Weighted VAE objective (see the module docstring) for video `x` and its reconstruction.

    Terms with weight 0 are skipped (reported as 0). `discriminator(recon) -> logits` is used
    only when given and `adversarial_weight > 0`; its generator loss is `-mean(logits)`.
    """
    if x.shape != recon.shape:
        raise ValueError(f"x {tuple(x.shape)} and recon {tuple(recon.shape)} differ in shape")
    if edge_weight < 0:
        raise ValueError(f"edge_weight must be >= 0, got {edge_weight}")
    zero = x.new_zeros(())
    diff = recon - x
    if edge_weight:
        w = 1.0 + edge_weight * edge_mask(x)
        norm = w.sum() * x.shape[1]  # w broadcasts over the channels

        def mean(e: Tensor) -> Tensor:
            return (w * e).sum() / norm
    else:
        mean = torch.mean
    terms = {
        "l1": mean(diff.abs()) if l1_weight else zero,
        "mse": mean(diff.pow(2)) if mse_weight else zero,
        "kl": posterior.kl().mean() / x[0].numel() if kl_weight else zero,
        "temporal": (
            (temporal_difference(recon) - temporal_difference(x)).abs().mean()
            if temporal_weight and x.shape[2] > 1 else zero
        ),
        "adversarial": zero,
    }
    if discriminator is not None and adversarial_weight:
        terms["adversarial"] = -discriminator(recon).mean()
    total = (
        l1_weight * terms["l1"] + mse_weight * terms["mse"] + kl_weight * terms["kl"]
        + temporal_weight * terms["temporal"] + adversarial_weight * terms["adversarial"]
    )
    return VAELoss(total, {k: v.detach() for k, v in terms.items()})


def discriminator_hinge_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Hinge loss for the discriminator: `mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))`."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


__all__ = ["VAELoss", "vae_loss", "temporal_difference", "edge_mask", "discriminator_hinge_loss",
           "EDGE_THRESHOLD", "EDGE_DILATION"]

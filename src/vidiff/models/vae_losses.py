"""Training losses for the video VAEs.

    total = l1_weight * mean|x_hat - x| + mse_weight * mean (x_hat - x)^2
          + kl_weight * KL / (C * F * H * W)
          + temporal_weight * mean|(x_hat[t+1] - x_hat[t]) - (x[t+1] - x[t])|
          + adversarial_weight * (-mean D(x_hat))

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

import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.models.vae import DiagonalGaussian


class VAELoss(NamedTuple):
    total: Tensor
    terms: dict[str, Tensor]  # detached, unweighted: l1, mse, kl, temporal, adversarial


def temporal_difference(x: Tensor) -> Tensor:
    """`x[:, :, t+1] - x[:, :, t]` for video `[B, C, F, H, W]` -> `[B, C, F-1, H, W]`."""
    return x[:, :, 1:] - x[:, :, :-1]


def vae_loss(
    x: Tensor,
    recon: Tensor,
    posterior: DiagonalGaussian,
    *,
    l1_weight: float = 1.0,
    mse_weight: float = 0.0,
    kl_weight: float = 1e-3,
    temporal_weight: float = 0.0,
    discriminator: nn.Module | None = None,
    adversarial_weight: float = 0.0,
) -> VAELoss:
    """Weighted VAE objective (see the module docstring) for video `x` and its reconstruction.

    Terms with weight 0 are skipped (reported as 0). `discriminator(recon) -> logits` is used
    only when given and `adversarial_weight > 0`; its generator loss is `-mean(logits)`.
    """
    if x.shape != recon.shape:
        raise ValueError(f"x {tuple(x.shape)} and recon {tuple(recon.shape)} differ in shape")
    zero = x.new_zeros(())
    diff = recon - x
    terms = {
        "l1": diff.abs().mean() if l1_weight else zero,
        "mse": diff.pow(2).mean() if mse_weight else zero,
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


__all__ = ["VAELoss", "vae_loss", "temporal_difference", "discriminator_hinge_loss"]

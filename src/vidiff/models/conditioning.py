"""The conditioning contract shared by every denoiser: `model(x_t, t, cond) -> prediction`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor


@dataclass
class Conditioning:
    """Everything a denoiser is conditioned on besides `x_t` and `t`.

    Shapes (B batch, L text tokens, D text width, C_z latent channels, F/H/W latent frames/size):
      text:         [B, L, D] text-encoder tokens (None = unconditional / no text)
      text_mask:    [B, L] bool, True for real tokens, False for padding
      image_latent: [B, C_z, F, H, W] conditioning latents (e.g. first frame, zeros elsewhere)
      frame_mask:   [B, F] float/bool, 1 where the frame is given as conditioning (image-to-video,
                    continuation, keyframes); models that concatenate it as channels broadcast it
      image_tokens: [B, N, D_img] image-encoder tokens (Wan I2V CLIP features)
      extras:       scalar conditions per sample, e.g. {"fps": [B], "motion": [B]}
    """

    text: Tensor | None = None
    text_mask: Tensor | None = None
    image_latent: Tensor | None = None
    frame_mask: Tensor | None = None
    image_tokens: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def map(self, fn) -> "Conditioning":
        """Apply `fn` to every tensor (e.g. `.to(device)`, `torch.cat([c, c])` for CFG batching)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "extras":
                out["extras"] = {k: fn(t) for k, t in v.items()}
            else:
                out[f.name] = None if v is None else fn(v)
        return replace(self, **out)

    def to(self, *args, **kwargs) -> "Conditioning":
        return self.map(lambda t: t.to(*args, **kwargs))

    @staticmethod
    def cat(conds: list["Conditioning"]) -> "Conditioning":
        """Concatenate along the batch; every entry must have the same fields set."""
        first = conds[0]
        out = {}
        for f in fields(first):
            vals = [getattr(c, f.name) for c in conds]
            if f.name == "extras":
                out["extras"] = {k: torch.cat([v[k] for v in vals]) for k in vals[0]}
            elif all(v is None for v in vals):
                out[f.name] = None
            elif any(v is None for v in vals):
                raise ValueError(f"Conditioning.cat: field {f.name!r} is set in some entries only")
            else:
                out[f.name] = torch.cat(vals)
        return Conditioning(**out)

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
        """Concatenate along the batch; every entry must have the same fields set.

        Text of different lengths (e.g. a prompt and the empty prompt for guidance) is right-padded
        with zeros to the longest, and the padding is marked False in `text_mask`.
        """
        first = conds[0]
        if first.text is not None and all(c.text is not None for c in conds):
            length = max(c.text.shape[1] for c in conds)
            conds = [c if c.text.shape[1] == length else c._pad_text(length) for c in conds]
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

    def _pad_text(self, length: int) -> "Conditioning":
        b, n = self.text.shape[:2]
        mask = self.text_mask if self.text_mask is not None else torch.ones(b, n, dtype=torch.bool, device=self.text.device)
        text = torch.nn.functional.pad(self.text, (0, 0, 0, length - n))
        mask = torch.nn.functional.pad(mask.bool(), (0, length - n), value=False)
        return replace(self, text=text, text_mask=mask)

"""CLIP image tokens for Wan 2.1 image-to-video.

Wan I2V conditions cross-attention on the penultimate hidden states of a CLIP vision tower
(ViT-H/14: 257 tokens of width 1280), computed from the *original* first frame by the CLIP
image processor (resize, center crop, normalise). Both parts come from local folders in the
diffusers layout (`image_encoder/` = transformers `CLIPVisionModel`, `image_processor/` =
`CLIPImageProcessor` config); nothing is downloaded.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor, nn


class WanImageEncoder(nn.Module):
    """`encode(images) -> [B, N, D]`: CLIP `hidden_states[-2]` of uint8 `[H, W, 3]` images.

    encoder_path:   folder with a transformers `CLIPVisionModel` (config.json + weights)
    processor_path: folder with `preprocessor_config.json` (CLIP mean/std, resize and crop)
    """

    def __init__(self, encoder_path: str, processor_path: str, dtype: torch.dtype | None = None):
        super().__init__()
        from transformers import CLIPImageProcessor, CLIPVisionModel

        for path, what in ((encoder_path, "config.json"), (processor_path, "preprocessor_config.json")):
            if not os.path.isfile(os.path.join(path, what)):
                raise FileNotFoundError(f"{path}: no {what} (expected a Wan I2V image_encoder/ and image_processor/)")
        try:
            kwargs = {"dtype": dtype} if dtype is not None else {}
            self.model = CLIPVisionModel.from_pretrained(encoder_path, **kwargs)
        except (OSError, ValueError) as e:
            raise ValueError(f"could not load a CLIPVisionModel from {encoder_path}: {e}") from e
        self.processor = CLIPImageProcessor.from_pretrained(processor_path)
        self.model.eval().requires_grad_(False)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def encode(self, images: list[np.ndarray]) -> Tensor:
        """uint8 images `[H, W, 3]` (any size) -> penultimate-layer tokens `[B, N, D]`."""
        from PIL import Image

        pil = [Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images]
        param = next(self.model.parameters())
        pixels = self.processor(images=pil, return_tensors="pt")["pixel_values"].to(param.device, param.dtype)
        return self.model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]

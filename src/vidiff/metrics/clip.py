"""CLIP text-video similarity (CLIP-SIM) and CLIPScore, with a CLIP loaded from a local directory.

- CLIP-SIM: ``mean_f cos(E_img(frame_f), E_txt(text))`` over the frames of a video.
- CLIPScore (Hessel et al. 2021, torchmetrics' convention): ``mean_f w * max(cos, 0)``, ``w = 100``.

The model is a Hugging Face ``CLIPModel`` directory (``config.json`` + weights + tokenizer files),
loaded with ``transformers`` (``pip install vidiff[hf]``); nothing is downloaded. Frames are
preprocessed here in torch (no ``CLIPProcessor``): resize the short side (bicubic, antialiased,
rounded to uint8 like Pillow), centre crop, scale to [0, 1], normalise with the mean/std of the
directory's ``preprocessor_config.json`` when present, else OpenAI CLIP's values with the model's
input size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vidiff.modelio import read_json

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIPSCORE_WEIGHT = 100.0


@dataclass(frozen=True)
class ClipPreprocessing:
    """How frames become CLIP pixel values: short side -> ``size``, centre crop ``crop`` (h, w)."""

    size: int = 224
    crop: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD

    def __post_init__(self) -> None:
        if self.size <= 0 or min(self.crop) <= 0:
            raise ValueError(f"ClipPreprocessing size {self.size} and crop {self.crop} must be positive")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"ClipPreprocessing mean {self.mean} / std {self.std} must be 3 values, std > 0")

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, image_size: int = 224) -> ClipPreprocessing:
        """Read ``preprocessor_config.json`` in ``directory``; defaults use ``image_size``."""
        path = os.path.join(os.fspath(directory), "preprocessor_config.json")
        if not os.path.isfile(path):
            return cls(size=image_size, crop=(image_size, image_size))
        cfg = read_json(path)  # ModelLoadError (a ValueError) naming the file when malformed
        size = cfg.get("size", image_size)
        if isinstance(size, dict):
            size = size.get("shortest_edge", size.get("height", image_size))
        crop = cfg.get("crop_size", size)
        crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (int(crop), int(crop))
        return cls(
            size=int(size),
            crop=crop,
            mean=tuple(cfg.get("image_mean", OPENAI_CLIP_MEAN)),
            std=tuple(cfg.get("image_std", OPENAI_CLIP_STD)),
        )


def preprocess_frames(frames: np.ndarray, prep: ClipPreprocessing) -> torch.Tensor:
    """uint8 ``[F, H, W, 3]`` -> float32 pixel values ``[F, 3, crop_h, crop_w]``.

    Short side resized to ``prep.size`` (long side ``int(size * long / short)``), bicubic with
    antialiasing, clamped and rounded to integers; centre crop; ``(x / 255 - mean) / std``.
    """
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be a uint8 array [F, H, W, 3], got {type(frames).__name__} "
            f"{getattr(frames, 'dtype', '')} {getattr(frames, 'shape', '')}"
        )
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(prep.size * long / short)
    target = (prep.size, new_long) if h <= w else (new_long, prep.size)
    if target != (h, w):
        x = F.interpolate(x, size=target, mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0, 255).round()
    ch, cw = prep.crop
    top, left = max((x.shape[-2] - ch) // 2, 0), max((x.shape[-1] - cw) // 2, 0)
    x = x[..., top : top + ch, left : left + cw]
    if x.shape[-2:] != (ch, cw):
        raise ValueError(f"frames of {h}x{w} resized to {tuple(target)} are smaller than the crop {prep.crop}")
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std


def _embedding(output) -> torch.Tensor:
    # transformers < 5 returns the projected tensor, >= 5 an output object with it as pooler_output
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipVideoScorer:
    """A CLIP model, its tokenizer and preprocessing; scores videos against captions."""

    def __init__(self, model, tokenizer, preprocessing: ClipPreprocessing, device: str = "cpu", batch_size: int = 32):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str = "cpu", batch_size: int = 32) -> ClipVideoScorer:
        """Load ``CLIPModel`` + tokenizer + preprocessing from a local Hugging Face directory."""
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"CLIP model directory {directory}: no such directory")
        if not os.path.isfile(os.path.join(directory, "config.json")):
            raise FileNotFoundError(f"CLIP model directory {directory}: no config.json (not a saved CLIPModel)")
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("CLIP metrics need transformers: pip install vidiff[hf]") from err
        model = CLIPModel.from_pretrained(directory, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        prep = ClipPreprocessing.from_directory(directory, image_size=model.config.vision_config.image_size)
        return cls(model, tokenizer, prep, device=device, batch_size=batch_size)

    @torch.no_grad()
    def image_embeddings(self, frames: np.ndarray) -> torch.Tensor:
        """Unit-norm image embeddings ``[F, D]`` of uint8 frames ``[F, H, W, 3]``."""
        pixels = preprocess_frames(frames, self.preprocessing)
        out = []
        for start in range(0, pixels.shape[0], self.batch_size):
            batch = pixels[start : start + self.batch_size].to(self.device)
            out.append(_embedding(self.model.get_image_features(pixel_values=batch)).float().cpu())
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings ``[T, D]`` (truncated to the model's context length)."""
        if isinstance(texts, str):
            texts = [texts]
        max_len = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        out = self.model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        )
        return F.normalize(_embedding(out).float().cpu(), dim=-1)

    def frame_similarities(self, frames: np.ndarray, text: str) -> torch.Tensor:
        """``cos(E_img(frame_f), E_txt(text))`` per frame, ``[F]``."""
        return self.image_embeddings(frames) @ self.text_embeddings([text])[0]

    def similarity(self, frames: np.ndarray, text: str) -> float:
        """CLIP-SIM: mean over frames of the cosine similarity with the text, in [-1, 1]."""
        return float(self.frame_similarities(frames, text).mean())

    def clip_score(self, frames: np.ndarray, text: str, weight: float = CLIPSCORE_WEIGHT) -> float:
        """CLIPScore: mean over frames of ``weight * max(cos, 0)`` (torchmetrics: weight 100)."""
        return float((weight * self.frame_similarities(frames, text).clamp(min=0)).mean())

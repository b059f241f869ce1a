"""CLIP-SIM / CLIPScore with a tiny random CLIPModel saved to a temporary directory: the embedding
path must agree with calling the transformers model directly, and the torch preprocessing with
transformers' CLIPImageProcessor."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from vidiff.metrics.clip import (  # noqa: E402
    OPENAI_CLIP_MEAN,
    ClipPreprocessing,
    ClipVideoScorer,
    preprocess_frames,
)

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def _byte_level_chars() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE uses for bytes (GPT-2 / CLIP convention)."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIP (32x32 images, 16-d embeddings) with a character-level tokenizer."""
    d = tmp_path_factory.mktemp("tiny_clip")
    chars = _byte_level_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(str(d))
    tokenizer.save_pretrained(str(d))
    logging.getLogger("transformers").setLevel(logging.ERROR)
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD
    )
    processor.save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def scorer(clip_dir):
    return ClipVideoScorer.from_pretrained(clip_dir)


def random_frames(n=4, h=32, w=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_preprocessing_config_is_read_from_the_directory(clip_dir, tmp_path):
    prep = ClipPreprocessing.from_directory(clip_dir)
    assert prep == ClipPreprocessing(size=32, crop=(32, 32), mean=tuple(MEAN), std=tuple(STD))
    default = ClipPreprocessing.from_directory(tmp_path, image_size=64)
    assert default.size == 64 and default.crop == (64, 64) and default.mean == OPENAI_CLIP_MEAN


def test_preprocessing_matches_clip_image_processor(clip_dir):
    processor = transformers.CLIPImageProcessor.from_pretrained(str(clip_dir))
    prep = ClipPreprocessing.from_directory(clip_dir)
    # no resize needed: exact
    frames = random_frames()
    ours = preprocess_frames(frames, prep)
    theirs = processor(images=list(frames), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    # resize (48x64 -> 32x42) and centre crop: Pillow's and torch's antialiased bicubic differ
    # by at most a grey level or two on smooth content
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = np.stack([(xx * 4) % 256, (yy * 5) % 256, (xx + yy) * 2], axis=-1).astype(np.uint8)[None]
    ours = preprocess_frames(smooth, prep)
    theirs = processor(images=list(smooth), return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 32, 32)
    grey_levels = (ours - theirs).abs() * torch.tensor(STD).view(1, 3, 1, 1) * 255
    assert grey_levels.mean() < 1.0 and grey_levels.max() <= 8.0


def test_embeddings_and_similarity_match_the_transformers_model(scorer):
    frames = random_frames(5)
    text = "a small red circle moves left on a black background"
    pixels = preprocess_frames(frames, scorer.preprocessing)
    tokens = scorer.tokenizer([text], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = scorer.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels)
    torch.testing.assert_close(scorer.image_embeddings(frames), out.image_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scorer.text_embeddings([text]), out.text_embeds, atol=1e-5, rtol=1e-5)
    # logits_per_image = exp(logit_scale) * cos(image, text)
    cos = out.logits_per_image[:, 0] / scorer.model.logit_scale.detach().exp()
    torch.testing.assert_close(scorer.frame_similarities(frames, text), cos, atol=1e-5, rtol=1e-5)
    assert scorer.similarity(frames, text) == pytest.approx(float(cos.mean()), abs=1e-5)
    assert scorer.clip_score(frames, text) == pytest.approx(float((100 * cos.clamp(min=0)).mean()), abs=1e-3)


def test_clip_score_clamps_negative_similarities(scorer):
    frames = random_frames(8, seed=3)
    texts = ["a blue square spins", "a large green triangle bounces", "a white diamond grows", "x"]
    sims = [scorer.frame_similarities(frames, t) for t in texts]
    assert any((s < 0).any() for s in sims), "need a negative cosine to exercise the clamp"
    for t, s in zip(texts, sims):
        assert scorer.clip_score(frames, t) == pytest.approx(float((100 * s.clamp(min=0)).mean()), abs=1e-3)
        assert scorer.clip_score(frames, t) >= 0.0


def test_batching_does_not_change_embeddings(clip_dir, scorer):
    frames = random_frames(7, seed=4)
    small_batches = ClipVideoScorer.from_pretrained(clip_dir, batch_size=3)
    torch.testing.assert_close(small_batches.image_embeddings(frames), scorer.image_embeddings(frames), atol=1e-5, rtol=1e-5)


def test_errors_name_the_problem(tmp_path, scorer):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        ClipVideoScorer.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        ClipVideoScorer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        scorer.similarity(np.zeros((2, 32, 32, 3), np.float32), "x")

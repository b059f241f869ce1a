"""The original Wan release's UMT5 encoder (`models_t5_umt5-xxl-enc-bf16.pth`, Wan's own T5
module names) converted into transformers' `UMT5EncoderModel`.

Name table (per block i; Wan's feed-forward is `fc1(x) * GELU_tanh(gate(x))`, transformers'
gated-GELU is `GELU_tanh(wi_0(x)) * wi_1(x)`; every block has its own relative position bias):

    token_embedding.weight                 -> shared.weight (= encoder.embed_tokens.weight)
    blocks.i.norm1.weight                  -> encoder.block.i.layer.0.layer_norm.weight
    blocks.i.attn.{q,k,v,o}.weight         -> encoder.block.i.layer.0.SelfAttention.{q,k,v,o}.weight
    blocks.i.pos_embedding.embedding.weight-> encoder.block.i.layer.0.SelfAttention.relative_attention_bias.weight
    blocks.i.norm2.weight                  -> encoder.block.i.layer.1.layer_norm.weight
    blocks.i.ffn.gate.0.weight             -> encoder.block.i.layer.1.DenseReluDense.wi_0.weight
    blocks.i.ffn.fc1.weight                -> encoder.block.i.layer.1.DenseReluDense.wi_1.weight
    blocks.i.ffn.fc2.weight                -> encoder.block.i.layer.1.DenseReluDense.wo.weight
    norm.weight                            -> encoder.final_layer_norm.weight

The architecture (width, heads, layers, vocabulary, buckets) is read from the tensor shapes;
relative positions use T5's bucketing with max distance 128 in both.
"""

from __future__ import annotations

import os
import re

import torch
from torch import Tensor

_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_TOP = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def wan_t5_to_umt5_key(key: str) -> str | None:
    """An original Wan T5 encoder key -> transformers UMT5EncoderModel key (None if unknown)."""
    if key in _TOP:
        return _TOP[key]
    m = _BLOCK_KEY.match(key)
    if m and m.group(2) in _BLOCK:
        return f"encoder.block.{m.group(1)}.{_BLOCK[m.group(2)]}"
    return None


def umt5_config_from_wan_t5(state: dict[str, Tensor]):
    """transformers UMT5Config for a Wan T5 encoder state dict, from its tensor shapes."""
    from transformers import UMT5Config

    needed = ("token_embedding.weight", "blocks.0.attn.q.weight", "blocks.0.ffn.fc1.weight",
              "blocks.0.pos_embedding.embedding.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(f"not a Wan UMT5 encoder state dict (missing {missing}; per-block position "
                         "embeddings are expected, as in umt5-xxl)")
    vocab, dim = state["token_embedding.weight"].shape
    buckets, heads = state["blocks.0.pos_embedding.embedding.weight"].shape
    dim_attn = state["blocks.0.attn.q.weight"].shape[0]
    layers = 1 + max(int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)))
    return UMT5Config(vocab_size=vocab, d_model=dim, d_kv=dim_attn // heads, d_ff=state["blocks.0.ffn.fc1.weight"].shape[0],
                      num_layers=layers, num_heads=heads, relative_attention_num_buckets=buckets,
                      relative_attention_max_distance=128, feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6,
                      is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False)


def convert_wan_t5_state_dict(state: dict[str, Tensor], model) -> dict[str, Tensor]:
    """Rename a Wan T5 encoder state dict for `model` (a UMT5EncoderModel); ValueError listing
    unknown, missing and mis-shaped keys."""
    want = model.state_dict()
    out, unknown = {}, []
    for k, v in state.items():
        name = wan_t5_to_umt5_key(k)
        if name is None:
            unknown.append(k)
        else:
            out[name] = v
    if "shared.weight" in out:
        out["encoder.embed_tokens.weight"] = out["shared.weight"]
    missing = sorted(set(want) - set(out))
    bad = [f"{k}: got {tuple(v.shape)}, expected {tuple(want[k].shape)}" for k, v in out.items()
           if k in want and v.shape != want[k].shape]
    if unknown or missing or bad:
        raise ValueError(f"Wan T5 encoder weights do not match: unexpected {sorted(unknown)}; missing (UMT5 names) "
                         f"{missing}; wrong shapes {bad}")
    return out


def load_wan_t5(pth_path: str, tokenizer_path: str, dtype: torch.dtype | None = None):
    """`models_t5_umt5-xxl-enc-bf16.pth` (+ the `google/umt5-xxl` tokenizer folder) -> a text
    encoder with Wan's convention (`vidiff.models.text.HFTextEncoder` interface: cleaned prompts,
    512-token budget, padding zeroed; encodes up to the longest prompt, the pipeline pads)."""
    from transformers import AutoTokenizer, UMT5EncoderModel

    from vidiff.models.text import HFTextEncoder

    if not os.path.isfile(pth_path):
        raise FileNotFoundError(f"Wan T5 weights not found: {pth_path}")
    state = torch.load(pth_path, map_location="cpu", weights_only=True)  # refuses arbitrary pickled objects
    if not isinstance(state, dict):
        raise ValueError(f"{pth_path}: expected a state dict, got {type(state).__name__}")
    config = umt5_config_from_wan_t5(state)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    model.load_state_dict(convert_wan_t5_state_dict(state, model), strict=True, assign=True)
    model.to(dtype or torch.float32)  # the release stores bf16; fp32 unless asked, like the diffusers layout
    encoder = HFTextEncoder.__new__(HFTextEncoder)  # same encode(); model built here, not from a folder
    torch.nn.Module.__init__(encoder)
    encoder.model = model.eval().requires_grad_(False)
    encoder.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    encoder.kind, encoder.path, encoder.max_length = "umt5", pth_path, 512
    encoder.pad_to_max_length, encoder.zero_padding, encoder.clean_prompts = False, True, True
    return encoder

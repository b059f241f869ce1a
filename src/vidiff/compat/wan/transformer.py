"""Wan 2.1 transformer checkpoints -> VideoDiT.

Two source layouts are accepted and detected from the key names:
  - diffusers `WanTransformer3DModel` (`condition_embedder.*`, `blocks.N.attn1.to_q`, ...)
  - the original Wan repository's `WanModel` (`time_embedding.0`, `blocks.N.self_attn.q`, ...),
    optionally under a `model.diffusion_model.` prefix; it is first renamed to diffusers' names
    with the same table as diffusers' `scripts/convert_wan_to_diffusers.py` (note the swap: the
    original's affine cross-attention norm is `norm3`, diffusers' `norm2`).
VideoDiT fuses projections: self-attention q/k/v -> `to_qkv`, cross-attention k/v -> `to_kv`,
image k/v -> `to_image_kv` (rows concatenated in that order), and keeps modulation tables as
[n, dim] instead of [1, n, dim]. Any key missing from, or left over in, the source is an error
that lists the keys in the source's own naming.

Public API:
    dit_config_from_wan(wan_config: dict, **overrides) -> DiTConfig
    convert_wan_transformer_state_dict(state_dict, config) -> dict[str, Tensor]
    load_wan_transformer(path, **overrides) -> VideoDiT
"""

from __future__ import annotations

import os
from glob import glob

import torch
from torch import Tensor

from vidiff.modelio import read_json
from vidiff.models.dit import DiTConfig, VideoDiT

# Original Wan module path -> diffusers module path (per block / top level).
ORIGINAL_TO_DIFFUSERS_BLOCK = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.k_img": "attn2.add_k_proj", "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "norm3": "norm2", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2", "modulation": "scale_shift_table",
}
ORIGINAL_TO_DIFFUSERS_TOP = {
    "patch_embedding": "patch_embedding",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "head.head": "proj_out", "head.modulation": "scale_shift_table",
}

# diffusers module path -> (VideoDiT module path, part index, number of parts). Parts are
# concatenated along dim 0 (weight rows and bias entries) in index order.
DIFFUSERS_TO_VIDIFF_BLOCK = {
    "attn1.to_q": ("self_attn.to_qkv", 0, 3), "attn1.to_k": ("self_attn.to_qkv", 1, 3),
    "attn1.to_v": ("self_attn.to_qkv", 2, 3), "attn1.to_out.0": ("self_attn.to_out", 0, 1),
    "attn1.norm_q": ("self_attn.norm_q", 0, 1), "attn1.norm_k": ("self_attn.norm_k", 0, 1),
    "attn2.to_q": ("cross_attn.to_q", 0, 1), "attn2.to_k": ("cross_attn.to_kv", 0, 2),
    "attn2.to_v": ("cross_attn.to_kv", 1, 2), "attn2.to_out.0": ("cross_attn.to_out", 0, 1),
    "attn2.norm_q": ("cross_attn.norm_q", 0, 1), "attn2.norm_k": ("cross_attn.norm_k", 0, 1),
    "attn2.add_k_proj": ("cross_attn.to_image_kv", 0, 2), "attn2.add_v_proj": ("cross_attn.to_image_kv", 1, 2),
    "attn2.norm_added_k": ("cross_attn.norm_image_k", 0, 1),
    "norm2": ("norm_cross", 0, 1), "ffn.net.0.proj": ("ffn.fc1", 0, 1), "ffn.net.2": ("ffn.fc2", 0, 1),
}
DIFFUSERS_TO_VIDIFF_TOP = {
    "patch_embedding": ("patch_embed.proj", 0, 1),
    "condition_embedder.time_embedder.linear_1": ("time_embed.linear_1", 0, 1),
    "condition_embedder.time_embedder.linear_2": ("time_embed.linear_2", 0, 1),
    "condition_embedder.time_proj": ("time_proj", 0, 1),
    "condition_embedder.text_embedder.linear_1": ("text_proj.fc1", 0, 1),
    "condition_embedder.text_embedder.linear_2": ("text_proj.fc2", 0, 1),
    "condition_embedder.image_embedder.norm1": ("image_proj.norm_in", 0, 1),
    "condition_embedder.image_embedder.ff.net.0.proj": ("image_proj.mlp.fc1", 0, 1),
    "condition_embedder.image_embedder.ff.net.2": ("image_proj.mlp.fc2", 0, 1),
    "condition_embedder.image_embedder.norm2": ("image_proj.norm_out", 0, 1),
    "proj_out": ("proj_out", 0, 1),
}
# Whole-parameter renames: Wan's [1, n, dim] tables -> VideoDiT's [n, dim].
TABLES = {"scale_shift_table": "modulation.table"}  # per block
TOP_TABLES = {"scale_shift_table": "head_modulation.table"}
# Keys diffusers itself ignores on load.
IGNORED_SUFFIXES = (".norm_added_q.weight",)
_PREFIXES = ("model.diffusion_model.", "diffusion_model.")


def _rename(key: str, block_table: dict, top_table: dict) -> str | None:
    """Rename `key` through (block, top) module tables; leaf params (weight/bias) are kept."""
    parts = key.split(".")
    if parts[0] == "blocks" and len(parts) > 2 and parts[1].isdigit():
        head, rest, table = "blocks." + parts[1] + ".", ".".join(parts[2:]), block_table
    else:
        head, rest, table = "", key, top_table
    if rest in table:
        return head + table[rest]
    module, _, leaf = rest.rpartition(".")
    if module in table and leaf in ("weight", "bias"):
        return head + table[module] + "." + leaf
    return None


def original_to_diffusers_key(key: str) -> str | None:
    """An original Wan key -> its diffusers name (None if the key is not part of WanModel)."""
    return _rename(key, ORIGINAL_TO_DIFFUSERS_BLOCK, ORIGINAL_TO_DIFFUSERS_TOP)


def _vidiff_sources() -> tuple[dict, dict]:
    """VideoDiT module path -> diffusers module paths in part order (block and top tables)."""
    out = []
    for table in (DIFFUSERS_TO_VIDIFF_BLOCK, DIFFUSERS_TO_VIDIFF_TOP):
        inv: dict[str, list] = {}
        for src, (dst, i, n) in table.items():
            inv.setdefault(dst, [None] * n)[i] = src
        out.append(inv)
    return out[0], out[1]


def _diffusers_sources(vidiff_key: str) -> list[str] | None:
    """diffusers keys whose tensors make up `vidiff_key`, in concatenation order."""
    block_inv, top_inv = _vidiff_sources()
    parts = vidiff_key.split(".")
    if parts[0] == "blocks" and len(parts) > 2 and parts[1].isdigit():
        head, rest, inv, tables = "blocks." + parts[1] + ".", ".".join(parts[2:]), block_inv, TABLES
    else:
        head, rest, inv, tables = "", vidiff_key, top_inv, TOP_TABLES
    for src, dst in tables.items():
        if rest == dst:
            return [head + src]
    module, _, leaf = rest.rpartition(".")
    if module in inv:
        return [head + m + "." + leaf for m in inv[module]]
    return None


def expected_shapes(config: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of a VideoDiT built from `config` (built on the meta device)."""
    with torch.device("meta"):
        model = VideoDiT(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _strip_prefix(state_dict: dict) -> dict:
    for p in _PREFIXES:
        if state_dict and all(k.startswith(p) for k in state_dict):
            return {k[len(p):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def detect_layout(state_dict: dict) -> str:
    """'diffusers' or 'original' from the key names; raises if neither is recognisable."""
    keys = list(state_dict)
    if any(k.startswith("condition_embedder.") or ".attn1." in k for k in keys):
        return "diffusers"
    if any(k.startswith(("time_embedding.", "text_embedding.")) or ".self_attn." in k for k in keys):
        return "original"
    raise ValueError(f"not a Wan transformer state dict (first keys: {keys[:5]})")


def convert_wan_transformer_state_dict(state_dict: dict[str, Tensor], config: DiTConfig) -> dict[str, Tensor]:
    """A Wan transformer state dict (diffusers or original names) -> VideoDiT's state dict.

    Raises ValueError listing missing keys, unexpected keys (both in the source's naming) and
    shape mismatches.
    """
    sd = _strip_prefix(state_dict)
    layout = detect_layout(sd)
    sd = {k: v for k, v in sd.items() if not k.endswith(IGNORED_SUFFIXES)}
    if layout == "original":
        renamed, source_name = {}, {}
        unknown = []
        for k, v in sd.items():
            dk = original_to_diffusers_key(k)
            if dk is None:
                unknown.append(k)
            else:
                renamed[dk], source_name[dk] = v, k
        sd = renamed
        to_source = lambda dk: source_name.get(dk) or _diffusers_to_original(dk)  # noqa: E731
    else:
        unknown, to_source = [], lambda dk: dk  # noqa: E731

    shapes = expected_shapes(config)
    plan, missing = {}, []
    for vkey in shapes:
        srcs = _diffusers_sources(vkey)
        if srcs is None:
            missing.append(f"{vkey} (VideoDiT parameter with no Wan counterpart for this config)")
            continue
        plan[vkey] = srcs
        missing += [to_source(s) for s in srcs if s not in sd]
    used = {s for srcs in plan.values() for s in srcs}
    unexpected = unknown + [to_source(k) for k in sd if k not in used]
    if missing or unexpected:
        raise ValueError(
            f"Wan transformer state dict ({layout} names) does not match the VideoDiT config: "
            f"missing keys {sorted(missing)}; unexpected keys {sorted(unexpected)}")

    out, bad = {}, []
    for vkey, srcs in plan.items():
        t = sd[srcs[0]] if len(srcs) == 1 else torch.cat([sd[s] for s in srcs], dim=0)
        if t.ndim == 3 and t.shape[0] == 1 and len(shapes[vkey]) == 2:  # [1, n, dim] tables
            t = t[0]
        if tuple(t.shape) != shapes[vkey]:
            bad.append(f"{vkey} <- {[to_source(s) for s in srcs]}: got {tuple(t.shape)}, expected {shapes[vkey]}")
        out[vkey] = t
    if bad:
        raise ValueError("Wan transformer state dict has wrong shapes for the VideoDiT config: " + "; ".join(bad))
    return out


def _diffusers_to_original(dkey: str) -> str:
    """Best-effort inverse rename for error messages."""
    inv_block = {v: k for k, v in ORIGINAL_TO_DIFFUSERS_BLOCK.items()}
    inv_top = {v: k for k, v in ORIGINAL_TO_DIFFUSERS_TOP.items()}
    return _rename(dkey, inv_block, inv_top) or dkey


_WAN_DIFFUSERS_KEYS = {
    "patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "text_dim",
    "freq_dim", "ffn_dim", "num_layers", "cross_attn_norm", "qk_norm", "eps", "image_dim",
    "added_kv_proj_dim", "rope_max_seq_len", "pos_embed_seq_len",
}
_WAN_ORIGINAL_KEYS = {
    "model_type", "patch_size", "text_len", "in_dim", "dim", "ffn_dim", "freq_dim", "text_dim", "out_dim",
    "num_heads", "num_layers", "window_size", "qk_norm", "cross_attn_norm", "eps",
}


def dit_config_from_wan(wan_config: dict, **overrides) -> DiTConfig:
    """A Wan transformer config (diffusers' `WanTransformer3DModel` config.json, or the original
    `WanModel` config with `dim`, `num_heads`, `in_dim`...) -> DiTConfig.

    Models with more input than output channels (I2V, 36 -> 16) get image_condition="preconcat":
    the caller passes the 36 channels. `overrides` replace any DiTConfig field afterwards
    (e.g. attention="causal"). Unknown keys (other than "_"-prefixed metadata) are rejected.
    """
    cfg = {k: v for k, v in wan_config.items() if not k.startswith("_")}
    original = "num_attention_heads" not in cfg and ("num_heads" in cfg or "dim" in cfg)
    known = _WAN_ORIGINAL_KEYS if original else _WAN_DIFFUSERS_KEYS
    for key in cfg:
        if key not in known:
            raise ValueError(f"unknown Wan transformer config key {key!r} (known: {sorted(known)})")
    if original:
        model_type = cfg.get("model_type", "t2v")
        if model_type not in ("t2v", "i2v"):
            raise ValueError(f"Wan model_type {model_type!r} is not supported (t2v, i2v)")
        if tuple(cfg.get("window_size", (-1, -1))) != (-1, -1):
            raise ValueError(f"Wan window_size {cfg['window_size']} (local attention) is not supported")
        dim, heads = cfg.get("dim", 2048), cfg.get("num_heads", 16)
        in_ch, out_ch = cfg.get("in_dim", 16), cfg.get("out_dim", 16)
        image_dim = 1280 if model_type == "i2v" else None  # CLIP ViT-H/14, fixed in WanModel
        qk_norm = bool(cfg.get("qk_norm", True))
    else:
        if cfg.get("pos_embed_seq_len") is not None:
            raise ValueError("Wan pos_embed_seq_len (FLF2V image position embedding) is not supported")
        heads, head_dim = cfg.get("num_attention_heads", 40), cfg.get("attention_head_dim", 128)
        dim = heads * head_dim
        in_ch, out_ch = cfg.get("in_channels", 16), cfg.get("out_channels", 16) or cfg.get("in_channels", 16)
        image_dim = cfg.get("image_dim")
        added = cfg.get("added_kv_proj_dim")
        if (added is None) != (image_dim is None) or (added is not None and added != dim):
            raise ValueError(f"Wan image_dim={image_dim}, added_kv_proj_dim={added}: supported are both None, or "
                             f"image_dim set with added_kv_proj_dim equal to the model width {dim}")
        qk_norm = cfg.get("qk_norm", "rms_norm_across_heads") is not None
    out = dict(
        in_channels=in_ch, out_channels=out_ch, patch_size=tuple(cfg.get("patch_size", (1, 2, 2))),
        dim=dim, num_heads=heads, num_layers=cfg.get("num_layers", 40),
        ffn_dim=cfg.get("ffn_dim", 13824 if not original else 8192), text_dim=cfg.get("text_dim", 4096),
        freq_dim=cfg.get("freq_dim", 256), eps=cfg.get("eps", 1e-6), qk_norm=qk_norm,
        cross_attn_norm=bool(cfg.get("cross_attn_norm", True)), image_dim=image_dim,
        image_condition="preconcat" if in_ch != out_ch else "none", timestep_scale=1000.0, rope_theta=10000.0,
    )
    out.update(overrides)
    return DiTConfig.from_dict(out)


def load_wan_transformer(path: str, dtype: torch.dtype = torch.float32, **overrides) -> VideoDiT:
    """Load a Wan transformer from a local directory (config.json + *.safetensors shards,
    diffusers or original names) into a VideoDiT. `overrides` replace DiTConfig fields."""
    from safetensors.torch import load_file

    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"{path}: no config.json (expected a Wan transformer directory)")
    config = dit_config_from_wan(read_json(cfg_path), **overrides)
    files = sorted(glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise ValueError(f"{path}: no *.safetensors weight files")
    state = {}
    for f in files:
        state.update(load_file(f))
    converted = convert_wan_transformer_state_dict(state, config)
    with torch.device("meta"):
        model = VideoDiT(config)
    model.load_state_dict(converted, strict=True, assign=True)
    return model.to(dtype)

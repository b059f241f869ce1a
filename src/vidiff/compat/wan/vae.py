"""Load Wan 2.1 VAE weights into `CausalVAE3D`.

Two foreign naming schemes are understood:
- diffusers `AutoencoderKLWan` (`encoder.down_blocks.3.conv1.weight`, `decoder.up_blocks.1...`),
  with its `config.json`;
- the original Wan 2.1 release `Wan2.1_VAE.pth` (`encoder.downsamples.3.residual.2.weight`,
  `decoder.upsamples.7.resample.1.weight`, top-level `conv1`/`conv2`), whose architecture is the
  fixed Wan 2.1 config and whose latent statistics are not in the file (`WAN21_LATENTS_*`).

The key table is generated from the config, so tiny test configs convert the same way as the
real one. Any missing, unexpected or mis-shaped key raises a ValueError that lists them.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from vidiff.modelio import read_json
from vidiff.models.vae import CausalVAE3D, VAEConfig

# Per-channel statistics of Wan 2.1's latents (mean, std), shipped with diffusers' config.
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)

# diffusers config keys that carry no architecture information
_IGNORED_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "_use_default_values"}


def wan21_vae_config() -> VAEConfig:
    """Wan 2.1's VAE with its latent statistics (the config of `Wan2.1_VAE.pth`)."""
    return VAEConfig(latents_mean=WAN21_LATENTS_MEAN, latents_std=WAN21_LATENTS_STD)


def vae_config_from_wan(config: dict[str, Any]) -> VAEConfig:
    """diffusers `AutoencoderKLWan` config dict -> `VAEConfig` (zeros padding, clamped output).

    Rejects what `CausalVAE3D` does not implement (Wan 2.2's residual blocks and patching,
    attention inside the down/up stages) and any key it does not know, naming it.
    """
    known = {
        "base_dim", "decoder_base_dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales",
        "temperal_downsample", "dropout", "latents_mean", "latents_std", "is_residual", "in_channels",
        "out_channels", "patch_size", "scale_factor_temporal", "scale_factor_spatial",
    }
    unknown = sorted(set(config) - known - _IGNORED_KEYS)
    if unknown:
        raise ValueError(f"unknown AutoencoderKLWan config key(s) {unknown}")
    if config.get("is_residual", False):
        raise ValueError("is_residual=True (the Wan 2.2 VAE) is not supported, only Wan 2.1's")
    if config.get("patch_size") not in (None, 1):
        raise ValueError(f"patch_size={config['patch_size']} (Wan 2.2) is not supported")
    if config.get("attn_scales"):
        raise ValueError(f"attention inside the stages (attn_scales={config['attn_scales']}) is not supported")
    defaults = VAEConfig()
    cfg = VAEConfig(
        in_channels=config.get("in_channels", 3),
        out_channels=config.get("out_channels", 3),
        base_dim=config.get("base_dim", defaults.base_dim),
        decoder_base_dim=config.get("decoder_base_dim"),
        z_dim=config.get("z_dim", defaults.z_dim),
        dim_mult=tuple(config.get("dim_mult", defaults.dim_mult)),
        num_res_blocks=config.get("num_res_blocks", defaults.num_res_blocks),
        temporal_downsample=tuple(config.get("temperal_downsample", defaults.temporal_downsample)),
        mid_attention=True,
        dropout=config.get("dropout", 0.0),
        causal_padding="zeros",
        clamp_output=True,
        latents_mean=config.get("latents_mean"),
        latents_std=config.get("latents_std"),
    )
    for key, ours in (("scale_factor_temporal", cfg.temporal_factor), ("scale_factor_spatial", cfg.spatial_factor)):
        if config.get(key) is not None and config[key] != ours:
            raise ValueError(f"config {key}={config[key]} disagrees with the architecture ({ours})")
    return cfg


def _res_block_rows(ours: str, diff: str, orig: str, has_shortcut: bool) -> list[tuple[str, str, str]]:
    rows = [
        (f"{ours}.norm1.gamma", f"{diff}.norm1.gamma", f"{orig}.residual.0.gamma"),
        (f"{ours}.conv1.weight", f"{diff}.conv1.weight", f"{orig}.residual.2.weight"),
        (f"{ours}.conv1.bias", f"{diff}.conv1.bias", f"{orig}.residual.2.bias"),
        (f"{ours}.norm2.gamma", f"{diff}.norm2.gamma", f"{orig}.residual.3.gamma"),
        (f"{ours}.conv2.weight", f"{diff}.conv2.weight", f"{orig}.residual.6.weight"),
        (f"{ours}.conv2.bias", f"{diff}.conv2.bias", f"{orig}.residual.6.bias"),
    ]
    if has_shortcut:
        rows += [
            (f"{ours}.shortcut.weight", f"{diff}.conv_shortcut.weight", f"{orig}.shortcut.weight"),
            (f"{ours}.shortcut.bias", f"{diff}.conv_shortcut.bias", f"{orig}.shortcut.bias"),
        ]
    return rows


def _mid_rows(part: str) -> list[tuple[str, str, str]]:
    rows = _res_block_rows(f"{part}.mid.res1", f"{part}.mid_block.resnets.0", f"{part}.middle.0", False)
    for name in ("norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight", "proj.bias"):
        rows.append((f"{part}.mid.attn.{name}", f"{part}.mid_block.attentions.0.{name}", f"{part}.middle.1.{name}"))
    rows += _res_block_rows(f"{part}.mid.res2", f"{part}.mid_block.resnets.1", f"{part}.middle.2", False)
    return rows


def _conv_rows(ours: str, diff: str, orig: str) -> list[tuple[str, str, str]]:
    return [(f"{ours}.{p}", f"{diff}.{p}", f"{orig}.{p}") for p in ("weight", "bias")]


def wan_vae_key_table(config: VAEConfig) -> list[tuple[str, str, str]]:
    """Every parameter as `(vidiff name, diffusers name, original Wan 2.1 name)` for `config`.

    Wan keeps the stage contents in flat lists (`encoder.downsamples.N`, `decoder.upsamples.N`:
    the residual blocks of each stage followed by its resampler); diffusers keeps the encoder list
    flat (`down_blocks.N`) and groups the decoder (`up_blocks.i.resnets.j`, `.upsamplers.0`).
    """
    if not config.mid_attention:
        raise ValueError("Wan VAEs always have mid attention; mid_attention=False has no Wan layout")
    rows: list[tuple[str, str, str]] = []
    levels = len(config.dim_mult)
    enc_w = [config.base_dim * m for m in (1, *config.dim_mult)]
    rows += _conv_rows("encoder.conv_in", "encoder.conv_in", "encoder.conv1")
    flat = 0
    for i in range(levels):
        for j in range(config.num_res_blocks):
            in_w = enc_w[i] if j == 0 else enc_w[i + 1]
            rows += _res_block_rows(f"encoder.stages.{i}.res_blocks.{j}", f"encoder.down_blocks.{flat}",
                                    f"encoder.downsamples.{flat}", in_w != enc_w[i + 1])
            flat += 1
        if i != levels - 1:
            ours = f"encoder.stages.{i}.downsample"
            rows += _conv_rows(f"{ours}.conv", f"encoder.down_blocks.{flat}.resample.1",
                               f"encoder.downsamples.{flat}.resample.1")
            if config.temporal_downsample[i]:
                rows += _conv_rows(f"{ours}.temporal.time_conv", f"encoder.down_blocks.{flat}.time_conv",
                                   f"encoder.downsamples.{flat}.time_conv")
            flat += 1
    rows += _mid_rows("encoder")
    rows.append(("encoder.norm_out.gamma", "encoder.norm_out.gamma", "encoder.head.0.gamma"))
    rows += _conv_rows("encoder.conv_out", "encoder.conv_out", "encoder.head.2")
    rows += _conv_rows("quant_conv", "quant_conv", "conv1")
    rows += _conv_rows("post_quant_conv", "post_quant_conv", "conv2")

    base = config.decoder_base_dim or config.base_dim
    dec_w = [base * m for m in (config.dim_mult[-1], *reversed(config.dim_mult))]
    temporal_up = tuple(reversed(config.temporal_downsample))
    rows += _conv_rows("decoder.conv_in", "decoder.conv_in", "decoder.conv1")
    rows += _mid_rows("decoder")
    flat = 0
    for i in range(levels):
        for j in range(config.num_res_blocks + 1):
            in_w = (dec_w[i] if i == 0 else dec_w[i] // 2) if j == 0 else dec_w[i + 1]
            rows += _res_block_rows(f"decoder.stages.{i}.res_blocks.{j}", f"decoder.up_blocks.{i}.resnets.{j}",
                                    f"decoder.upsamples.{flat}", in_w != dec_w[i + 1])
            flat += 1
        if i != levels - 1:
            ours, diff = f"decoder.stages.{i}.upsample", f"decoder.up_blocks.{i}.upsamplers.0"
            rows += _conv_rows(f"{ours}.conv", f"{diff}.resample.1", f"decoder.upsamples.{flat}.resample.1")
            if temporal_up[i]:
                rows += _conv_rows(f"{ours}.temporal.time_conv", f"{diff}.time_conv",
                                   f"decoder.upsamples.{flat}.time_conv")
            flat += 1
    rows.append(("decoder.norm_out.gamma", "decoder.norm_out.gamma", "decoder.head.0.gamma"))
    rows += _conv_rows("decoder.conv_out", "decoder.conv_out", "decoder.head.2")
    return rows


def detect_wan_vae_naming(state_dict: dict[str, Tensor]) -> str:
    """"diffusers" or "original" from characteristic keys; ValueError if neither."""
    if "encoder.conv_in.weight" in state_dict or any(k.startswith("encoder.down_blocks.") for k in state_dict):
        return "diffusers"
    if "encoder.conv1.weight" in state_dict or any(k.startswith("encoder.downsamples.") for k in state_dict):
        return "original"
    sample = sorted(state_dict)[:5]
    raise ValueError(f"not a Wan 2.1 VAE state dict (neither diffusers nor original key names); first keys: {sample}")


def _list(names: list[str], limit: int = 40) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def convert_wan_vae_state_dict(state_dict: dict[str, Tensor], config: VAEConfig) -> dict[str, Tensor]:
    """Rename a Wan VAE state dict (diffusers or original names, detected) to `CausalVAE3D`'s.

    Norm gammas are reshaped from Wan's broadcast shapes `(C, 1, 1[, 1])` to `(C,)`. The latent
    statistics buffers are not part of Wan's weights; they come from the config.
    """
    naming = detect_wan_vae_naming(state_dict)
    column = 1 if naming == "diffusers" else 2
    table = wan_vae_key_table(config)
    foreign_to_ours = {row[column]: row[0] for row in table}
    missing = sorted(set(foreign_to_ours) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(foreign_to_ours))
    if missing or unexpected:
        parts = [f"Wan VAE state dict ({naming} names) does not match the config"]
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_list(unexpected)}")
        raise ValueError("; ".join(parts))
    out = {}
    for foreign, ours in foreign_to_ours.items():
        value = state_dict[foreign]
        if ours.endswith(".gamma"):
            value = value.reshape(-1)
        out[ours] = value
    return out


def load_wan_vae_state_dict(model: CausalVAE3D, state_dict: dict[str, Tensor]) -> CausalVAE3D:
    """Convert `state_dict` (either naming) and load it into `model`, checking every shape."""
    converted = convert_wan_vae_state_dict(state_dict, model.config)
    expected = model.state_dict()
    bad = [
        f"{k}: got {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if bad:
        raise ValueError(f"Wan VAE weights have {len(bad)} mis-shaped tensor(s): {_list(bad, 20)}")
    # latent statistics are buffers set from the config, not part of Wan's weights
    missing = set(expected) - set(converted) - {"latents_mean", "latents_std"}
    if missing:  # pragma: no cover - the key table covers every parameter
        raise ValueError(f"key table misses model parameters: {_list(sorted(missing))}")
    model.load_state_dict(converted, strict=False)
    return model


def load_wan_vae(path: str | os.PathLike, config: VAEConfig | None = None) -> CausalVAE3D:
    """A `CausalVAE3D` in eval mode from local Wan 2.1 VAE weights.

    path: a diffusers `vae/` directory (`config.json` + `diffusion_pytorch_model.safetensors`),
    a `.safetensors` file, or the original `Wan2.1_VAE.pth` (read with `torch.load(...,
    weights_only=True)`, which refuses arbitrary pickled objects). Files without a config use
    `config` or Wan 2.1's (`wan21_vae_config()`).
    """
    from safetensors.torch import load_file

    path = os.fspath(path)
    if os.path.isdir(path):
        cfg_path = os.path.join(path, "config.json")
        if config is None:
            if not os.path.isfile(cfg_path):
                raise FileNotFoundError(f"no config.json in Wan VAE directory {path}")
            config = vae_config_from_wan(read_json(cfg_path))
        candidates = [os.path.join(path, n) for n in ("diffusion_pytorch_model.safetensors", "model.safetensors")]
        weights = next((c for c in candidates if os.path.isfile(c)), None)
        if weights is None:
            raise FileNotFoundError(f"no diffusion_pytorch_model.safetensors in Wan VAE directory {path}")
        state = load_file(weights)
    elif os.path.isfile(path):
        if path.endswith(".safetensors"):
            state = load_file(path)
        elif path.endswith((".pth", ".pt", ".bin")):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ValueError(f"unknown Wan VAE weight format {path!r} (expected .safetensors or .pth)")
        config = config or wan21_vae_config()
    else:
        raise FileNotFoundError(f"Wan VAE weights not found: {path}")
    model = CausalVAE3D(config)
    return load_wan_vae_state_dict(model, state).eval()

"""Write vidiff models in Wan 2.1's diffusers layout (the inverse of the loaders).

A VideoDiT is expressible as a `WanTransformer3DModel` when it uses full attention, q/k
RMS-norm, the Wan time scale (1000) and RoPE base (10000), no scalar extra conditions and, for
channel conditioning, 4 mask channels; a CausalVAE3D as an `AutoencoderKLWan` with zero causal
padding, mid attention and clamped output. Anything else raises ValueError naming the field.

    save_wan_transformer(model, "out/transformer")
    save_wan_vae(vae, "out/vae")
    save_wan_pipeline(pipe, "out")        # a whole WanVideoPipeline, loadable by diffusers too
"""

from __future__ import annotations

import os

from torch import Tensor

from vidiff.compat.wan.transformer import TABLES, TOP_TABLES, _diffusers_sources
from vidiff.compat.wan.vae import wan_vae_key_table
from vidiff.modelio import atomic_directory, save_state_dict, write_json

WEIGHTS = "diffusion_pytorch_model.safetensors"


def wan_transformer_config(config) -> dict:
    """DiTConfig -> `WanTransformer3DModel` config.json (ValueError for what Wan cannot express)."""
    problems = []
    if config.attention != "full":
        problems.append(f"attention={config.attention!r} (Wan: 'full')")
    if not config.qk_norm:
        problems.append("qk_norm=False (Wan always RMS-normalises q and k)")
    if config.extra_conditions:
        problems.append(f"extra_conditions={config.extra_conditions} (Wan has none)")
    if config.timestep_scale != 1000.0:
        problems.append(f"timestep_scale={config.timestep_scale} (Wan: 1000)")
    if config.rope_theta != 10000.0:
        problems.append(f"rope_theta={config.rope_theta} (Wan: 10000)")
    if config.image_condition == "concat" and config.mask_channels != 4:
        problems.append(f"mask_channels={config.mask_channels} (Wan I2V: 4)")
    if config.image_condition == "none" and config.in_channels != config.out_channels:
        problems.append("in_channels != out_channels without channel conditioning")
    if problems:
        raise ValueError("VideoDiT config cannot be written in Wan's layout: " + "; ".join(problems))
    return {
        "_class_name": "WanTransformer3DModel",
        "patch_size": list(config.patch_size),
        "num_attention_heads": config.num_heads,
        "attention_head_dim": config.head_dim,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "text_dim": config.text_dim,
        "freq_dim": config.freq_dim,
        "ffn_dim": config.ffn_dim,
        "num_layers": config.num_layers,
        "cross_attn_norm": config.cross_attn_norm,
        "qk_norm": "rms_norm_across_heads",
        "eps": config.eps,
        "image_dim": config.image_dim,
        "added_kv_proj_dim": config.dim if config.image_dim is not None else None,
        "rope_max_seq_len": 1024,
        "pos_embed_seq_len": None,
    }


def wan_transformer_state_dict(model) -> dict[str, Tensor]:
    """VideoDiT state dict -> diffusers `WanTransformer3DModel` names (fused projections split,
    [n, dim] modulation tables back to [1, n, dim])."""
    out = {}
    tables = set(TABLES.values()) | set(TOP_TABLES.values())
    for key, value in model.state_dict().items():
        sources = _diffusers_sources(key)
        if sources is None:
            raise ValueError(f"VideoDiT parameter {key} has no Wan counterpart")
        rest = key.split(".", 2)[2] if key.startswith("blocks.") else key
        if rest in tables:
            value = value.unsqueeze(0)
        parts = value.chunk(len(sources), dim=0) if len(sources) > 1 else (value,)
        for name, part in zip(sources, parts):
            out[name] = part.float().contiguous()
    return out


def _save_component(directory: str | os.PathLike, config: dict, state: dict[str, Tensor]) -> None:
    """`config.json` + `diffusion_pytorch_model.safetensors` in `directory` (both atomic)."""
    os.makedirs(directory, exist_ok=True)
    save_state_dict(os.path.join(directory, WEIGHTS), state, metadata={"format": "pt"})
    write_json(os.path.join(directory, "config.json"), config)


def save_wan_transformer(model, directory: str | os.PathLike) -> None:
    """Write `config.json` + `diffusion_pytorch_model.safetensors` (fp32) in diffusers' layout."""
    _save_component(directory, wan_transformer_config(model.config), wan_transformer_state_dict(model))


def wan_vae_config(config) -> dict:
    """VAEConfig -> `AutoencoderKLWan` config.json (ValueError for what Wan cannot express)."""
    problems = []
    if config.causal_padding != "zeros":
        problems.append(f"causal_padding={config.causal_padding!r} (Wan: 'zeros')")
    if not config.mid_attention:
        problems.append("mid_attention=False (Wan always has it)")
    if not config.clamp_output:
        problems.append("clamp_output=False (Wan clamps decoded video)")
    if problems:
        raise ValueError("VAE config cannot be written in Wan's layout: " + "; ".join(problems))
    z = config.z_dim
    out = {
        "_class_name": "AutoencoderKLWan",
        "base_dim": config.base_dim,
        "z_dim": z,
        "dim_mult": list(config.dim_mult),
        "num_res_blocks": config.num_res_blocks,
        "attn_scales": [],
        "temperal_downsample": list(config.temporal_downsample),
        "dropout": config.dropout,
        "latents_mean": list(config.latents_mean) if config.latents_mean is not None else [0.0] * z,
        "latents_std": list(config.latents_std) if config.latents_std is not None else [1.0] * z,
        "is_residual": False,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "scale_factor_temporal": config.temporal_factor,
        "scale_factor_spatial": config.spatial_factor,
    }
    if config.decoder_base_dim is not None:
        out["decoder_base_dim"] = config.decoder_base_dim
    return out


def wan_vae_state_dict(vae) -> dict[str, Tensor]:
    """CausalVAE3D state dict -> `AutoencoderKLWan` names; RMS-norm gammas get Wan's broadcast
    shapes ((C, 1, 1) in the per-frame attention, (C, 1, 1, 1) elsewhere)."""
    ours = vae.state_dict()
    out = {}
    for name, diff, _ in wan_vae_key_table(vae.config):
        value = ours[name].float()
        if name.endswith(".gamma"):
            value = value.reshape(-1, 1, 1) if ".attn." in name else value.reshape(-1, 1, 1, 1)
        out[diff] = value.contiguous()
    return out


def save_wan_vae(vae, directory: str | os.PathLike) -> None:
    """Write `config.json` + `diffusion_pytorch_model.safetensors` in diffusers' layout."""
    _save_component(directory, wan_vae_config(vae.config), wan_vae_state_dict(vae))


def wan_scheduler_config(scheduler) -> dict:
    """vidiff SchedulerConfig (flow schedule, unipc or euler) -> diffusers scheduler_config.json."""
    if scheduler.schedule != "flow" or scheduler.prediction_type != "flow":
        raise ValueError("only flow-matching schedulers (schedule='flow', prediction_type='flow') have a Wan form")
    if scheduler.sampler == "unipc":
        return {"_class_name": "UniPCMultistepScheduler", "num_train_timesteps": scheduler.num_train_steps,
                "prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": scheduler.shift,
                "solver_order": 2, "solver_type": "bh2", "predict_x0": True, "lower_order_final": True,
                "final_sigmas_type": "zero", "timestep_spacing": "linspace"}
    if scheduler.sampler == "euler":
        return {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": scheduler.num_train_steps,
                "shift": scheduler.shift, "use_dynamic_shifting": False}
    raise ValueError(f"sampler {scheduler.sampler!r} has no Wan scheduler (unipc or euler)")


def save_wan_pipeline(pipe, directory: str | os.PathLike) -> None:
    """Write a pipeline with a UMT5 `HFTextEncoder` in diffusers' Wan layout, atomically."""
    text = pipe.text_encoder
    if getattr(text, "kind", None) != "umt5" or not hasattr(text, "model"):
        raise ValueError("Wan's layout needs a UMT5 Hugging Face text encoder (vidiff.models.text.wan_text_encoder)")
    i2v = pipe.config.image_conditioning == "concat"
    image_encoder = getattr(pipe, "image_encoder", None)
    with atomic_directory(directory) as tmp:
        save_wan_transformer(pipe.transformer, os.path.join(tmp, "transformer"))
        save_wan_vae(pipe.vae, os.path.join(tmp, "vae"))
        text.model.save_pretrained(os.path.join(tmp, "text_encoder"))
        text.tokenizer.save_pretrained(os.path.join(tmp, "tokenizer"))
        os.makedirs(os.path.join(tmp, "scheduler"))
        write_json(os.path.join(tmp, "scheduler", "scheduler_config.json"), wan_scheduler_config(pipe.scheduler))
        index = {
            "_class_name": "WanImageToVideoPipeline" if i2v else "WanPipeline",
            "boundary_ratio": None, "expand_timesteps": False,
            "scheduler": ["diffusers", wan_scheduler_config(pipe.scheduler)["_class_name"]],
            "text_encoder": ["transformers", type(text.model).__name__],
            "tokenizer": ["transformers", type(text.tokenizer).__name__],
            "transformer": ["diffusers", "WanTransformer3DModel"],
            "transformer_2": [None, None],
            "vae": ["diffusers", "AutoencoderKLWan"],
        }
        if i2v and image_encoder is not None:
            image_encoder.model.save_pretrained(os.path.join(tmp, "image_encoder"))
            image_encoder.processor.save_pretrained(os.path.join(tmp, "image_processor"))
            index["image_encoder"] = ["transformers", type(image_encoder.model).__name__]
            index["image_processor"] = ["transformers", type(image_encoder.processor).__name__]
        write_json(os.path.join(tmp, "model_index.json"), index)

"""Wan 2.1 checkpoints (diffusers and original layouts) converted into vidiff's models.

    pipe = load_wan_pipeline("Wan2.1-T2V-1.3B-Diffusers")          # or VideoPipeline.from_pretrained
    pipe = load_wan_pipeline(path, dtype="bf16", device="cuda", offload="blocks")
    out = pipe("a cat walks on the grass", num_frames=81, height=480, width=832)

Layouts:
  diffusers: model_index.json, transformer/, vae/, text_encoder/ (UMT5), tokenizer/, scheduler/,
             and for I2V image_encoder/ (CLIPVisionModel) + image_processor/.
  original:  the Wan-AI release folder (T2V): config.json (WanModel) + diffusion_pytorch_model*.safetensors,
             Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth (Wan's T5 names, converted) and the
             google/umt5-xxl/ tokenizer; a Hugging Face UMT5 folder (`text_encoder_path` or
             text_encoder/) is used instead when present. Original-layout I2V (open-clip CLIP) is
             not supported: use the diffusers I2V folders.
"""

from __future__ import annotations

import os

__all__ = ["WanVideoPipeline", "load_wan_pipeline", "scheduler_from_wan", "load_wan_transformer", "load_wan_vae",
           "dit_config_from_wan", "wan_timestep", "is_wan_directory"]

# torch-importing names load on first use, so that `vidiff --help` (which reads the CLI options
# in vidiff.compat.wan.options) stays instant
_LAZY = {"WanVideoPipeline": "pipeline", "wan_timestep": "pipeline", "load_wan_transformer": "transformer",
         "dit_config_from_wan": "transformer", "load_wan_vae": "vae"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"vidiff.compat.wan.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'vidiff.compat.wan' has no attribute {name!r}")

# scheduler config values Wan's samplers reproduce (anything else is refused, naming the key)
_UNIPC_REQUIRED = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "solver_order": 2,
                   "solver_type": "bh2", "predict_x0": True, "lower_order_final": True, "thresholding": False,
                   "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
                   "use_dynamic_shifting": False, "final_sigmas_type": "zero", "shift_terminal": None}
_EULER_REQUIRED = {"use_dynamic_shifting": False, "shift_terminal": None, "use_karras_sigmas": False,
                   "use_exponential_sigmas": False, "use_beta_sigmas": False, "invert_sigmas": False,
                   "stochastic_sampling": False}


def scheduler_from_wan(config: dict, num_inference_steps: int = 50, guidance_scale: float = 5.0):
    """diffusers scheduler config (UniPCMultistepScheduler with flow sigmas, or
    FlowMatchEulerDiscreteScheduler) -> vidiff SchedulerConfig over the flow schedule."""
    from vidiff.pipelines.scheduler import SchedulerConfig

    name = config.get("_class_name")
    if name == "UniPCMultistepScheduler":
        required, sampler, shift = _UNIPC_REQUIRED, "unipc", config.get("flow_shift", 1.0)
        if config.get("disable_corrector"):
            raise ValueError(f"UniPC disable_corrector={config['disable_corrector']} is not supported")
    elif name == "FlowMatchEulerDiscreteScheduler":
        required, sampler, shift = _EULER_REQUIRED, "euler", config.get("shift", 1.0)
    else:
        raise ValueError(f"scheduler {name!r} is not supported for Wan (UniPCMultistepScheduler with "
                         "use_flow_sigmas, or FlowMatchEulerDiscreteScheduler)")
    for key, want in required.items():
        if key in config and config[key] != want and not (want is False and not config[key]):
            raise ValueError(f"{name} {key}={config[key]!r} is not supported (vidiff reproduces {key}={want!r})")
    return SchedulerConfig(schedule="flow", prediction_type="flow", sampler=sampler,
                           num_inference_steps=num_inference_steps, shift=float(shift),
                           guidance_scale=guidance_scale, num_train_steps=int(config.get("num_train_timesteps", 1000)))


def is_wan_directory(directory: str) -> bool:
    """A diffusers Wan folder (model_index.json class Wan*) or an original Wan release folder."""
    from vidiff.modelio import read_json

    index = os.path.join(directory, "model_index.json")
    if os.path.isfile(index):
        return str(read_json(index).get("_class_name", "")).startswith("Wan")
    cfg = os.path.join(directory, "config.json")
    if not os.path.isfile(cfg):
        return False
    data = read_json(cfg)
    return data.get("_class_name") in (None, "WanModel") and "dim" in data and "num_heads" in data


def load_wan_pipeline(directory: str | os.PathLike, device: str = "cpu", dtype=None, offload: str = "none",
                      text_encoder_path: str | None = None, vae_path: str | None = None):
    """Load a Wan 2.1 folder (diffusers or original layout, see the module doc).

    dtype: None / "fp32" (everything fp32), "bf16" or "fp16" (transformer with Wan's fp32
        modules kept, text and image encoders in that dtype, VAE fp32).
    offload: "none" (all on `device`), "model" (each component on `device` only while used) or
        "blocks" (as model, and the transformer's blocks streamed one at a time).
    text_encoder_path / vae_path: use this UMT5 (Hugging Face folder) / VAE (diffusers vae/ folder,
        .safetensors or .pth) instead of the folder's own.
    """
    import torch

    from vidiff.compat.wan.memory import parse_dtype
    from vidiff.compat.wan.pipeline import WanVideoPipeline
    from vidiff.compat.wan.transformer import load_wan_transformer
    from vidiff.compat.wan.vae import load_wan_vae
    from vidiff.modelio import ModelLoadError, read_json
    from vidiff.pipelines.pipeline import PipelineConfig

    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ModelLoadError(f"{directory}: model directory not found")
    torch_dtype = parse_dtype(dtype) if dtype is not None else torch.float32
    text_dtype = None if torch_dtype == torch.float32 else torch_dtype
    index_path = os.path.join(directory, "model_index.json")
    if os.path.isfile(index_path):
        index = read_json(index_path)
        name = index.get("_class_name", "")
        if name not in ("WanPipeline", "WanImageToVideoPipeline"):
            raise ModelLoadError(f"{index_path}: {name!r} is not supported (WanPipeline, WanImageToVideoPipeline)")
        if index.get("transformer_2", [None])[0] is not None or index.get("boundary_ratio") is not None \
                or index.get("expand_timesteps"):
            raise ModelLoadError(f"{index_path}: two-expert / expand_timesteps pipelines (Wan 2.2) are not supported")
        for sub in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
            if not os.path.isdir(os.path.join(directory, sub)):
                raise ModelLoadError(f"{directory}: missing the {sub}/ folder of a diffusers Wan pipeline")
        i2v = name == "WanImageToVideoPipeline"
        vae = load_wan_vae(vae_path or os.path.join(directory, "vae"))
        overrides = dict(image_condition="concat", mask_channels=vae.temporal_factor) if i2v else {}
        transformer = load_wan_transformer(os.path.join(directory, "transformer"), **overrides).eval()
        text_encoder = _text_encoder(text_encoder_path or os.path.join(directory, "text_encoder"),
                                     os.path.join(directory, "tokenizer"), text_dtype)
        scheduler = scheduler_from_wan(read_json(os.path.join(directory, "scheduler", "scheduler_config.json")))
        image_encoder = None
        if i2v and transformer.config.image_dim is not None:
            from vidiff.compat.wan.image_encoder import WanImageEncoder

            image_encoder = WanImageEncoder(os.path.join(directory, "image_encoder"),
                                            os.path.join(directory, "image_processor"))
    else:
        transformer, vae, text_encoder, scheduler, image_encoder, i2v = _load_original(
            directory, text_encoder_path, vae_path, text_dtype)
    config = PipelineConfig(num_frames=81, height=480, width=832, fps=16.0,
                            image_conditioning="concat" if i2v else "none")
    pipe = WanVideoPipeline(transformer, vae, text_encoder, scheduler, config, image_encoder=image_encoder)
    if torch_dtype != torch.float32:
        pipe.set_dtype(torch_dtype)
    if offload == "none":
        return pipe.to(device)
    return pipe.enable_offload(offload, device)


def _text_encoder(path: str, tokenizer_path: str | None, dtype):
    """Wan's UMT5 convention (`wan_text_encoder`: cleaned prompts, 512-token budget, padding
    zeroed), but encoding only up to the longest prompt; `WanVideoPipeline.encode_prompts`
    zero-pads to 512 (the same tokens, without running UMT5 over the padding)."""
    from vidiff.models.text import wan_text_encoder

    encoder = wan_text_encoder(path, tokenizer_path=tokenizer_path, dtype=dtype)
    encoder.pad_to_max_length = False
    return encoder


def _load_original(directory: str, text_encoder_path: str | None, vae_path: str | None, text_dtype):
    """The original Wan-AI release layout (transformer, VAE and UMT5 converted from Wan's names)."""
    from vidiff.compat.wan.transformer import load_wan_transformer
    from vidiff.compat.wan.vae import load_wan_vae
    from vidiff.modelio import ModelLoadError, read_json
    from vidiff.pipelines.scheduler import SchedulerConfig

    cfg_path = os.path.join(directory, "config.json")
    vae_path = vae_path or os.path.join(directory, "Wan2.1_VAE.pth")
    if not os.path.isfile(cfg_path) or not os.path.exists(vae_path):
        raise ModelLoadError(f"{directory}: neither a diffusers Wan folder (model_index.json) nor an original Wan "
                             f"release (config.json + Wan2.1_VAE.pth; VAE looked for at {vae_path})")
    model_type = read_json(cfg_path).get("model_type", "t2v")
    i2v = model_type == "i2v"
    if i2v:
        raise ModelLoadError(f"{cfg_path}: original-layout I2V needs the open-clip XLM-RoBERTa CLIP converted to "
                             "transformers; use the diffusers layout (Wan2.1-I2V-*-Diffusers) instead")
    vae = load_wan_vae(vae_path)
    transformer = load_wan_transformer(directory).eval()
    te_path = text_encoder_path or os.path.join(directory, "text_encoder")
    t5_pth = os.path.join(directory, "models_t5_umt5-xxl-enc-bf16.pth")
    tokenizer_files = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
    tok = next((p for p in (te_path, os.path.join(os.path.dirname(te_path), "tokenizer"),
                            os.path.join(directory, "google", "umt5-xxl")) if os.path.isdir(p)
                and any(os.path.isfile(os.path.join(p, f)) for f in tokenizer_files)), None)
    if os.path.isfile(os.path.join(te_path, "config.json")):
        text_encoder = _text_encoder(te_path, tok, text_dtype)
    elif os.path.isfile(t5_pth) and text_encoder_path is None:
        from vidiff.compat.wan.text_encoder import load_wan_t5

        if tok is None:
            raise ModelLoadError(f"{directory}: no UMT5 tokenizer (google/umt5-xxl/ with tokenizer files)")
        text_encoder = load_wan_t5(t5_pth, tok, dtype=text_dtype)
    else:
        raise ModelLoadError(f"{directory}: no UMT5 text encoder (models_t5_umt5-xxl-enc-bf16.pth, or a Hugging Face "
                             f"UMT5EncoderModel folder at {te_path})")
    scheduler = SchedulerConfig(schedule="flow", prediction_type="flow", sampler="unipc", num_inference_steps=50,
                                shift=3.0, guidance_scale=5.0)
    return transformer, vae, text_encoder, scheduler, None, False

"""Wan 2.1 pipelines loaded by vidiff vs diffusers' WanPipeline / WanImageToVideoPipeline.

Tiny random models (UMT5, WanTransformer3DModel, AutoencoderKLWan, CLIPVisionModel) are built
with diffusers/transformers here, saved in diffusers' layout to a temp dir, and run by both
libraries with the same seed and scheduler; nothing is downloaded (the tokenizer is a
sentencepiece model trained in the test).
"""

import argparse
import json
import os
import shutil

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from vidiff.compat.wan import load_wan_pipeline, scheduler_from_wan, wan_timestep  # noqa: E402
from vidiff.compat.wan.memory import BlockOffload, cast_transformer  # noqa: E402
from vidiff.compat.wan.options import add_wan_arguments, load_pipeline_with_options  # noqa: E402
from vidiff.compat.wan.pipeline import WanVideoPipeline  # noqa: E402
from vidiff.models.conditioning import Conditioning  # noqa: E402
from vidiff.pipelines import VideoPipeline  # noqa: E402
from vidiff.testing import offline_t5_tokenizer  # noqa: E402

ATOL = 1e-4
PROMPT = "a red circle moves left"
NEGATIVE = "blurry"
RUN = dict(num_frames=9, height=32, width=32, num_inference_steps=3, guidance_scale=5.0)
Z = 4  # latent channels of the tiny VAE


def _tokenizer():
    return offline_t5_tokenizer([PROMPT, NEGATIVE, "a cat plays piano in the snow", "waves on a beach at sunset"] * 20)


def _perturb(module, scale):
    with torch.no_grad():  # random values in every parameter (Wan inits some to constants)
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module.eval()


def _build(root, i2v: bool):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tok = _tokenizer()
    text = UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                       relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                       decoder_start_token_id=0)).eval()
    vae = _perturb(diffusers.AutoencoderKLWan(base_dim=8, z_dim=Z, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                              temperal_downsample=[False, True, True],
                                              latents_mean=[0.1 * i for i in range(Z)],
                                              latents_std=[1 + 0.1 * i for i in range(Z)]), 0.05)
    cfg = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=Z, out_channels=Z,
               text_dim=32, freq_dim=32, ffn_dim=48, num_layers=2)
    extra = {}
    if i2v:
        cfg.update(in_channels=3 * Z, image_dim=16, added_kv_proj_dim=24)
        vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                                  num_attention_heads=2, image_size=28, patch_size=14)).eval()
        processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
        extra = dict(image_encoder=vision, image_processor=processor)
    transformer = _perturb(diffusers.WanTransformer3DModel(**cfg), 0.1)
    scheduler = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                  flow_shift=3.0)
    cls = diffusers.WanImageToVideoPipeline if i2v else diffusers.WanPipeline
    pipe = cls(tokenizer=tok, text_encoder=text, vae=vae, scheduler=scheduler, transformer=transformer, **extra)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(root)
    return pipe


def _image():
    return (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)


def _reference(pipe, i2v: bool):
    """diffusers' output frames (np, [0, 1]) and final latents (captured at the last step)."""
    from PIL import Image

    captured = {}

    def keep(_pipe, _i, _t, kwargs):
        captured["latents"] = kwargs["latents"].clone()
        return {}

    kw = dict(RUN, negative_prompt=NEGATIVE, generator=torch.Generator().manual_seed(0), output_type="np",
              callback_on_step_end=keep, max_sequence_length=512)
    if i2v:
        out = pipe(Image.fromarray(_image()), PROMPT, **kw)
    else:
        out = pipe(PROMPT, **kw)
    return out.frames[0], captured["latents"]


@pytest.fixture(scope="module")
def wan_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    out = {}
    for kind in ("t2v", "i2v"):
        pipe = _build(root / kind, kind == "i2v")
        out[kind] = (str(root / kind), pipe, *_reference(pipe, kind == "i2v"))
    return out


def _run(pipe, i2v: bool, **kw):
    args = dict(RUN, negative_prompt=NEGATIVE, seed=0, output_type="float", return_latents=True, progress=False)
    args.update(kw)
    return pipe(PROMPT, image=_image() if i2v else None, **args)


def _err(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# -- whole-pipeline parity ---------------------------------------------------------------------


def test_t2v_pipeline_matches_diffusers(wan_dirs):
    path, _, frames, latents = wan_dirs["t2v"]
    pipe = VideoPipeline.from_pretrained(path)  # dispatches on model_index.json
    assert isinstance(pipe, WanVideoPipeline) and pipe.scheduler.sampler == "unipc" and pipe.scheduler.shift == 3.0
    out = _run(pipe, False)
    assert out.frames.shape == frames.shape == (9, 32, 32, 3)
    assert _err(out.latents, latents) < ATOL
    assert _err(out.frames, frames) < ATOL
    assert float(np.std(frames)) > 0.05  # the comparison is not between two flat videos


def test_i2v_pipeline_matches_diffusers(wan_dirs):
    path, _, frames, latents = wan_dirs["i2v"]
    pipe = load_wan_pipeline(path)
    assert pipe.image_encoder is not None and pipe.transformer.config.image_condition == "concat"
    out = _run(pipe, True)
    assert _err(out.latents, latents) < ATOL
    assert _err(out.frames, frames) < ATOL
    # the image matters: another first frame gives another video
    other = pipe(PROMPT, image=255 - _image(), **RUN, seed=0, output_type="latent", progress=False)
    assert _err(other.latents, latents) > 1e-2


def test_euler_scheduler_matches_diffusers(wan_dirs, tmp_path):
    path, ref, _, _ = wan_dirs["t2v"]
    copy = tmp_path / "euler"
    shutil.copytree(path, copy)
    shutil.rmtree(copy / "scheduler")
    diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(copy / "scheduler")
    index = json.loads((copy / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    (copy / "model_index.json").write_text(json.dumps(index))
    ref_euler = diffusers.WanPipeline.from_pretrained(copy)
    ref_euler.set_progress_bar_config(disable=True)
    frames, latents = _reference(ref_euler, False)
    pipe = load_wan_pipeline(copy)
    assert pipe.scheduler.sampler == "euler"
    out = _run(pipe, False)
    assert _err(out.latents, latents) < ATOL
    assert _err(out.frames, frames) < ATOL


def test_wan_timestep_reproduces_integer_timesteps():
    k = torch.arange(0, 1001, dtype=torch.float64)
    t = (k + 0.37) / 1000  # any t inside [k, k+1) / 1000
    v = wan_timestep(t, integer=True)
    assert v.dtype == torch.float32
    got = v * 1000.0  # what VideoDiT's time embedding computes, in float32
    exact = got == k.float()
    assert int((~exact).sum()) == 10  # the integers no float32 v reaches by 1000 * v
    assert float((got - k.float()).abs().max()) <= 3.1e-5
    for i in torch.nonzero(~exact).flatten().tolist():  # and those are the nearest reachable
        for d in (float("inf"), float("-inf")):
            assert abs(float(torch.nextafter(v[i], torch.tensor(d)) * 1000.0) - i) >= abs(float(got[i]) - i)
    t = torch.tensor([0.123456789], dtype=torch.float64)
    assert torch.equal(wan_timestep(t, integer=False), t.float())


# -- memory options ----------------------------------------------------------------------------


def test_block_and_model_offload_give_identical_results(wan_dirs):
    path = wan_dirs["t2v"][0]
    pipe = load_wan_pipeline(path)
    plain = _run(pipe, False, output_type="latent").latents
    for mode in ("model", "blocks"):
        pipe.enable_offload(mode, "cpu")  # the mechanics (hooks, data swaps) run the same on CPU
        assert torch.equal(_run(pipe, False, output_type="latent").latents, plain)
    assert pipe.transformer.blocks[0].self_attn.to_qkv.weight.device.type == "cpu"
    pipe.to("cpu")  # leaves offload: hooks removed
    assert pipe.offload == "none" and not pipe.transformer.blocks[0]._forward_pre_hooks

    model = pipe.transformer
    offload = BlockOffload(model, "cpu").enable()
    x = torch.randn(1, Z, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    cond = Conditioning(text=torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        y = model(x, torch.tensor([0.5]), cond)
    assert offload.loads == len(model.blocks)
    offload.disable()
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([0.5]), cond), y)


def test_bf16_keeps_wan_fp32_modules(wan_dirs):
    path, ref, _, _ = wan_dirs["t2v"]
    pipe = load_wan_pipeline(path)
    model = pipe.transformer
    x = torch.randn(1, Z, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    cond = Conditioning(text=torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        y32 = model(x, torch.tensor([0.5]), cond)
        cast_transformer(model, "bf16")
        y16 = model(x.bfloat16(), torch.tensor([0.5]), cond).float()
    assert model.time_embed.linear_1.weight.dtype == torch.float32
    assert model.blocks[0].modulation.table.dtype == torch.float32
    assert model.head_modulation.table.dtype == torch.float32
    assert model.blocks[0].norm_cross.weight.dtype == torch.float32
    assert model.blocks[0].self_attn.to_qkv.weight.dtype == torch.bfloat16
    assert model.proj_out.weight.dtype == torch.bfloat16
    rel = (y16 - y32).norm() / y32.norm()
    assert rel < 3e-2
    # diffusers' own bf16 model (same fp32-kept modules) agrees to bf16 precision too
    ref16 = diffusers.WanTransformer3DModel.from_pretrained(os.path.join(path, "transformer"),
                                                            torch_dtype=torch.bfloat16).eval()
    with torch.no_grad():
        yd = ref16(x.bfloat16(), torch.tensor([500]), cond.text.bfloat16(), return_dict=False)[0].float()
    assert (yd - y32).norm() / y32.norm() < 3e-2
    assert (y16 - yd).norm() / y32.norm() < 3e-2


def test_cli_options_load_bf16_with_block_offload(wan_dirs):
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    add_wan_arguments(parser)
    args = parser.parse_args(["--dtype", "bf16", "--offload", "blocks"])
    pipe = load_pipeline_with_options(wan_dirs["t2v"][0], args)
    assert pipe.offload == "blocks"
    assert pipe.transformer.proj_out.weight.dtype == torch.bfloat16
    assert next(pipe.vae.parameters()).dtype == torch.float32
    out = _run(pipe, False, output_type="uint8", num_inference_steps=2)
    assert out.frames.dtype == np.uint8 and out.frames.shape == (9, 32, 32, 3)
    assert out.latents.dtype == torch.float32


# -- export and errors -------------------------------------------------------------------------


def test_save_pretrained_writes_diffusers_layout(wan_dirs, tmp_path):
    path, ref, _, _ = wan_dirs["i2v"]
    pipe = load_wan_pipeline(path)
    pipe.save_pretrained(tmp_path / "out")
    back = diffusers.WanImageToVideoPipeline.from_pretrained(tmp_path / "out")
    for name in ("transformer", "vae"):
        want, got = getattr(ref, name).state_dict(), getattr(back, name).state_dict()
        assert sorted(want) == sorted(got)
        for k in want:
            assert torch.equal(want[k], got[k]), k
    ref.scheduler.set_timesteps(5)
    back.scheduler.set_timesteps(5)
    assert torch.equal(ref.scheduler.sigmas, back.scheduler.sigmas)
    again = load_wan_pipeline(tmp_path / "out")  # and vidiff reads its own export
    assert again.config.image_conditioning == "concat"


def test_mismatched_keys_are_listed(wan_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "broken"
    shutil.copytree(wan_dirs["t2v"][0], copy)
    weights = copy / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state["blocks.1.attn1.to_k.weight"]
    state["blocks.0.attn1.to_z.weight"] = torch.zeros(1)
    save_file(state, weights)
    with pytest.raises(ValueError, match=r"blocks\.1\.attn1\.to_k\.weight") as err:
        load_wan_pipeline(copy)
    assert "blocks.0.attn1.to_z.weight" in str(err.value)


def test_bad_inputs_are_refused(wan_dirs):
    t2v = load_wan_pipeline(wan_dirs["t2v"][0])
    with pytest.raises(ValueError, match="text-to-video"):
        t2v(PROMPT, image=_image(), **RUN)
    i2v = load_wan_pipeline(wan_dirs["i2v"][0])
    with pytest.raises(ValueError, match="image-to-video"):
        i2v(PROMPT, **RUN)
    with pytest.raises(ValueError, match="multiples of 16"):
        t2v(PROMPT, **dict(RUN, height=40))
    good = dict(diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                  flow_shift=5.0).config, _class_name="UniPCMultistepScheduler")
    assert scheduler_from_wan(good).shift == 5.0
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        scheduler_from_wan(dict(good, use_karras_sigmas=True))
    with pytest.raises(ValueError, match="DDIMScheduler"):
        scheduler_from_wan({"_class_name": "DDIMScheduler"})


def _umt5_to_wan_t5(key: str):
    """transformers UMT5EncoderModel key -> Wan's T5 name (the inverse of the loader's table)."""
    from vidiff.compat.wan.text_encoder import _BLOCK, _TOP

    inverse = {v: k for k, v in _TOP.items()}
    if key in inverse:
        return inverse[key]
    parts = key.split(".")
    if key.startswith("encoder.block."):
        rest = ".".join(parts[3:])
        for wan, hf in _BLOCK.items():
            if hf == rest:
                return f"blocks.{parts[2]}.{wan}"
    return None


def test_original_layout_folder_matches_diffusers(wan_dirs, tmp_path):
    """The Wan-AI release layout: WanModel config.json + original key names at the top level."""
    from safetensors.torch import load_file, save_file

    from vidiff.compat.wan import is_wan_directory
    from vidiff.compat.wan.transformer import _diffusers_to_original

    path, ref, frames, latents = wan_dirs["t2v"]
    root = tmp_path / "Wan2.1-T2V-tiny"
    root.mkdir()
    state = load_file(os.path.join(path, "transformer", "diffusion_pytorch_model.safetensors"))
    original = {_diffusers_to_original(k): v for k, v in state.items()}
    assert "head.head.weight" in original and "blocks.0.self_attn.q.weight" in original
    save_file(original, root / "diffusion_pytorch_model.safetensors")
    c = ref.transformer.config
    (root / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "model_type": "t2v", "dim": c.num_attention_heads * c.attention_head_dim,
        "num_heads": c.num_attention_heads, "num_layers": c.num_layers, "ffn_dim": c.ffn_dim, "freq_dim": c.freq_dim,
        "in_dim": c.in_channels, "out_dim": c.out_channels, "text_dim": c.text_dim, "eps": c.eps, "text_len": 512}))
    # the release's UMT5: Wan's own T5 names in a .pth (written with torch.save, as released; fp32
    # here so that the comparison with the fp32 reference stays exact)
    umt5 = load_file(os.path.join(path, "text_encoder", "model.safetensors"))
    wan_t5 = {_umt5_to_wan_t5(k): v for k, v in umt5.items() if k != "encoder.embed_tokens.weight"}
    assert None not in wan_t5 and "blocks.1.ffn.gate.0.weight" in wan_t5
    torch.save(wan_t5, root / "models_t5_umt5-xxl-enc-bf16.pth")
    shutil.copytree(os.path.join(path, "tokenizer"), root / "google" / "umt5-xxl")
    assert is_wan_directory(str(root))
    pipe = load_wan_pipeline(root, vae_path=os.path.join(path, "vae"))
    assert pipe.scheduler.sampler == "unipc" and pipe.scheduler.shift == 3.0
    out = _run(pipe, False)
    assert _err(out.latents, latents) < ATOL
    assert _err(out.frames, frames) < ATOL


def test_vidiff_generate_runs_a_wan_folder(wan_dirs, tmp_path, capsys):
    from vidiff.cli import main

    out = tmp_path / "wan.mp4"
    code = main(["generate", PROMPT, "--model", wan_dirs["t2v"][0], "--frames", "9", "--height", "32", "--width", "32",
                 "--steps", "2", "--out", str(out)])
    assert code == 0 and out.is_file() and (tmp_path / "wan_sheet.png").is_file()
    assert "9 frames 32x32" in capsys.readouterr().out
    record = json.loads((tmp_path / "wan.mp4.json").read_text())
    assert (record["frames"], record["arguments"]["steps"], record["long"]) == (9, 2, None)


def test_wan_t5_conversion_lists_bad_keys(wan_dirs):
    from safetensors.torch import load_file
    from transformers import UMT5EncoderModel

    from vidiff.compat.wan.text_encoder import convert_wan_t5_state_dict, umt5_config_from_wan_t5

    umt5 = load_file(os.path.join(wan_dirs["t2v"][0], "text_encoder", "model.safetensors"))
    wan_t5 = {_umt5_to_wan_t5(k): v for k, v in umt5.items() if k != "encoder.embed_tokens.weight"}
    config = umt5_config_from_wan_t5(wan_t5)
    assert (config.d_model, config.num_layers, config.num_heads, config.d_kv) == (32, 2, 4, 8)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    del wan_t5["blocks.1.attn.k.weight"]
    wan_t5["blocks.0.attn.z.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.z\.weight") as err:
        convert_wan_t5_state_dict(wan_t5, model)
    assert "encoder.block.1.layer.0.SelfAttention.k.weight" in str(err.value)

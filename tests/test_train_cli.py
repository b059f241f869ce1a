"""`vidiff train`: tiny recipes through the command's handler (built on a local argparse parser):
training, exact --resume, --export to a loadable pipeline, VAE export, and clear errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidiff.cli import CLIError
from vidiff.cli import train as train_cli
from vidiff.models.vae import CausalVAE3D, VAEConfig
from vidiff.train.logging import read_jsonl
from vidiff.train.recipe import VAESection, load_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PROMPT = "a large red circle moves right on a black background"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidiff")
    train_cli.register(parser.add_subparsers())
    return parser


def vidiff_train(*argv: str) -> int:
    args = _parser().parse_args(["train", *argv])
    return args.handler(args)


def _tiny_dit(tmp, out: str, steps: int) -> list[str]:
    """world_dit.toml shrunk: 5x32x32 clips, a 1-layer DiT, constant LR (so a 2-step run resumed
    to 4 steps must equal a 4-step run exactly)."""
    return [f"{CONFIGS}/world_dit.toml", "--out", str(tmp / out), f"vae.path={tmp / 'vae'}", f"data.cache_dir={tmp / 'latents'}",
            "data.frames=5", "data.size=32", "data.batch_size=2", "data.cache_clips=6", "model.dit.dim=32",
            "model.dit.num_heads=2", "model.dit.num_layers=1", "model.dit.ffn_dim=64",
            "model.text.dim=32", "model.text.depth=1", f"train.steps={steps}", "train.warmup_steps=0",
            "train.min_lr_ratio=1.0", "train.lr=1e-3", "train.ema_decay=0.9", "train.ema_warmup_steps=0",
            "train.checkpoint_every=2", "train.validate_every=4", "train.progress=false", "train.log_every=1",
            "train.device=cpu", "train.precision=fp32", "validation.steps=2", f"validation.prompts=['{PROMPT}']",
            "validation.loss_clips=2", "diffusion.sampling_steps=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train_cli")
    torch.manual_seed(0)
    CausalVAE3D(VAEConfig.world(base_dim=8)).save_pretrained(tmp / "vae")
    assert vidiff_train(*_tiny_dit(tmp, "full", 4)) == 0
    assert vidiff_train(*_tiny_dit(tmp, "resumed", 2), "--no-export") == 0
    with pytest.warns(UserWarning, match=r"differs from the one it was trained with in: train\.steps$"):
        assert vidiff_train(*_tiny_dit(tmp, "resumed", 4), "--resume") == 0
    return tmp


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    assert "vidiff train configs/world_dit.toml" in text and "--resume" in text and "key.sub=value" in text


def test_unknown_override_key_is_named(tmp_path):
    with pytest.raises(CLIError, match=r"unknown key 'train.stepz' in \S*configs/world_dit.toml"):
        vidiff_train(f"{CONFIGS}/world_dit.toml", "train.stepz=3", "--out", str(tmp_path))
    with pytest.raises(CLIError, match="'steps' is not an override of the form key.sub=value"):
        vidiff_train(f"{CONFIGS}/world_dit.toml", "steps")
    with pytest.raises(CLIError, match="recipe nowhere.toml does not exist"):
        vidiff_train("nowhere.toml")


def test_missing_vae_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CLIError, match=f"vae.path {tmp_path / 'novae'}: no VAE folder there"):
        vidiff_train(f"{CONFIGS}/world_dit.toml", f"vae.path={tmp_path / 'novae'}", "--out", str(tmp_path / "run"))


def test_training_writes_log_checkpoints_samples_and_pipeline(runs):
    full = runs / "full"
    records = read_jsonl(full / "log.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert any("val/loss" in r for r in records)
    assert (full / "loss.png").is_file()
    assert sorted(p.name for p in full.glob("ckpt-*")) == ["ckpt-00000002", "ckpt-00000004"]
    samples = full / "samples" / "step-00000004"
    assert (samples / "sheet.png").is_file() and (samples / "t2v-00-seed0.mp4").is_file()
    assert len(list(samples.glob("i2v-*.mp4"))) == 1
    assert json.loads((full / "export" / "model_index.json").read_text())["_class_name"] == "VideoPipeline"


def test_resume_continues_exactly(runs):
    a = runs / "full" / "ckpt-00000004"
    b = runs / "resumed" / "ckpt-00000004"
    for name in ("model.safetensors", "ema.safetensors"):
        sa, sb = load_file(str(a / name)), load_file(str(b / name))
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    steps = [r["step"] for r in read_jsonl(runs / "resumed" / "log.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4]


def test_export_writes_a_pipeline_that_loads_and_generates(runs):
    from vidiff.pipelines import VideoPipeline

    target = runs / "exported"
    assert vidiff_train(*_tiny_dit(runs, "full", 4), "--export", str(target)) == 0
    pipe = VideoPipeline.from_pretrained(target)
    out = pipe(PROMPT, num_inference_steps=2, seed=0, progress=False)
    assert out.frames.shape == (5, 32, 32, 3) and out.frames.dtype.name == "uint8"
    # The transformer holds the EMA weights of the last checkpoint, not the live ones.
    ema = load_file(str(runs / "full" / "ckpt-00000004" / "ema.safetensors"))
    live = load_file(str(runs / "full" / "ckpt-00000004" / "model.safetensors"))
    exported = load_file(str(target / "transformer" / "model.safetensors"))
    key = "blocks.0.ffn.fc1.weight" if "denoiser.blocks.0.ffn.fc1.weight" in ema else next(
        k.removeprefix("denoiser.") for k in ema if k.startswith("denoiser.") and ema[k].ndim == 2)
    assert torch.equal(exported[key], ema["denoiser." + key])
    assert not torch.equal(exported[key], live["denoiser." + key])
    # The end-of-training export and the --export one agree.
    final = load_file(str(runs / "full" / "export" / "transformer" / "model.safetensors"))
    assert all(torch.equal(final[k], exported[k]) for k in final)
    # Sampling defaults come from the recipe given at export time, the weights from the checkpoint.
    retuned = runs / "retuned"
    assert vidiff_train(*_tiny_dit(runs, "full", 4), "diffusion.sampling_shift=2.5", "diffusion.guidance_scale=1.5",
                        "diffusion.sampling_steps=7", "diffusion.sampling_context_noise=0.05", "--export", str(retuned)) == 0
    sch = VideoPipeline.from_pretrained(retuned).scheduler
    assert (sch.shift, sch.guidance_scale, sch.num_inference_steps, sch.context_noise) == (2.5, 1.5, 7, 0.05)
    recipe = load_recipe(str(CONFIGS / "world_dit.toml"), []).diffusion
    first = VideoPipeline.from_pretrained(target).scheduler
    assert recipe.sampling_shift != 2.5 and first.shift == recipe.sampling_shift
    assert recipe.sampling_context_noise != 0.05 and first.context_noise == recipe.sampling_context_noise
    again = load_file(str(retuned / "transformer" / "model.safetensors"))
    assert all(torch.equal(again[k], exported[k]) for k in again)


def test_vae_run_exports_a_vae_with_latent_stats(tmp_path):
    from vidiff.train.vae_task import _stats_batches

    argv = [f"{CONFIGS}/world_vae.toml", "--out", str(tmp_path / "vae_run"), "vae.config.base_dim=8", "data.frames=5",
            "data.size=32", "data.batch_size=2", "train.steps=3", "train.progress=false", "train.validate_every=3",
            "vae.stats_clips=6", "validation.clips=2", "train.device=cpu", "train.precision=fp32"]
    assert vidiff_train(*argv) == 0
    vae = CausalVAE3D.from_pretrained(tmp_path / "vae_run" / "export")
    z_dim = vae.config.z_dim
    assert len(vae.config.latents_mean) == z_dim and all(s > 0 for s in vae.config.latents_std)
    assert (tmp_path / "vae_run" / "samples" / "step-00000003" / "recon.mp4").is_file()
    # Normalised latents of the clips the statistics came from: per-channel mean 0 and std 1.
    cfg = load_recipe(argv[0], argv[3:])
    with torch.no_grad():
        z = torch.cat([vae.normalize(vae.encode(b).mode()) for b in _stats_batches(cfg)])
    z = z.transpose(0, 1).reshape(z_dim, -1).double()
    assert torch.allclose(z.mean(1), torch.zeros(z_dim, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(z.std(1, unbiased=False), torch.ones(z_dim, dtype=torch.float64), atol=1e-3)


def test_decoder_fine_tuning_keeps_the_encoder_and_the_latent_stats_exactly(tmp_path):
    init = CausalVAE3D(VAEConfig.world(base_dim=8))
    init.set_latent_stats(torch.linspace(-1, 1, init.z_dim), torch.linspace(0.5, 2, init.z_dim))
    init.save_pretrained(tmp_path / "init")
    argv = [f"{CONFIGS}/world_vae.toml", "--out", str(tmp_path / "ft"), "vae.config.base_dim=8", "data.frames=5",
            "data.size=32", "data.batch_size=2", "train.steps=3", "train.progress=false", "train.validate_every=0",
            "vae.stats_clips=2", "train.device=cpu", "train.precision=fp32", "train.lr=1e-2", "train.warmup_steps=0",
            f"vae.init={tmp_path / 'init'}", 'vae.train="decoder"', "vae.loss.edge_weight=4.0"]
    assert vidiff_train(*argv) == 0
    tuned = CausalVAE3D.from_pretrained(tmp_path / "ft" / "export")
    before, after = init.state_dict(), tuned.state_dict()
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith("decoder.")]
    assert encoder and decoder
    assert all(torch.equal(before[k], after[k]) for k in encoder)  # frozen: the latents are init's
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    assert tuned.config.latents_mean == init.config.latents_mean
    assert tuned.config.latents_std == init.config.latents_std
    # a resume takes the weights and the stats from its checkpoint: the init folder may be gone
    (tmp_path / "init").rename(tmp_path / "init_moved")
    # a checkpoint written before a recipe key existed: the key counts at its default, no change
    saved = tmp_path / "ft" / "ckpt-00000003" / "config.json"
    size, old = saved.stat().st_size, json.loads(saved.read_text())
    del old["vae"]["loss"]["l1_weight"]
    saved.write_text(json.dumps(old).ljust(size))  # the checkpoint checks the file's size
    with pytest.warns(UserWarning, match=r"differs from the one it was trained with in: train\.steps$"):
        assert vidiff_train(*argv, "--resume", "train.steps=4") == 0
    resumed = CausalVAE3D.from_pretrained(tmp_path / "ft" / "export")
    assert all(torch.equal(before[k], resumed.state_dict()[k]) for k in encoder)
    assert resumed.config.latents_mean == init.config.latents_mean
    (tmp_path / "init_moved").rename(tmp_path / "init")
    # dropout and output clamping are not architecture: the recipe's values win
    other = CausalVAE3D(VAEConfig.world(base_dim=8, dropout=0.1, clamp_output=False))
    other.load_state_dict(init.state_dict())
    other.save_pretrained(tmp_path / "init_dropout")
    assert vidiff_train(*argv[:-3], "--out", str(tmp_path / "ft2"), f"vae.init={tmp_path / 'init_dropout'}",
                        'vae.train="decoder"') == 0
    tuned2 = CausalVAE3D.from_pretrained(tmp_path / "ft2" / "export")
    assert tuned2.config.dropout == 0.0 and tuned2.config.clamp_output
    assert all(torch.equal(before[k], tuned2.state_dict()[k]) for k in encoder)
    assert tuned2.config.latents_std == init.config.latents_std
    # an init of another architecture is refused, naming what differs; a missing one names the path
    with pytest.raises(CLIError, match=f"vae.init {tmp_path / 'init'}: its config differs .* z_dim"):
        vidiff_train(*argv, "vae.config.z_dim=8")
    with pytest.raises(CLIError, match=f"vae.init {tmp_path / 'none'}: no VAE folder there"):
        vidiff_train(*argv, f"vae.init={tmp_path / 'none'}")
    with pytest.raises(ValueError, match="needs vae.init"):
        VAESection(train="decoder")


def test_unet_recipe_trains_and_exports_a_loadable_pipeline(runs):
    from vidiff.pipelines import VideoPipeline

    out = runs / "unet"
    argv = [f"{CONFIGS}/world_unet.toml", "--out", str(out), f"vae.path={runs / 'vae'}", f"data.cache_dir={runs / 'latents'}",
            "data.frames=5", "data.size=32", "data.batch_size=2", "data.cache_clips=6", "model.unet.model_channels=16",
            "model.unet.channel_mult=[1, 2]", "model.unet.attention_levels=[1]", "model.unet.head_dim=8",
            "model.unet.norm_groups=4", "model.text.dim=16", "model.text.depth=1", "train.steps=2", "train.progress=false",
            "train.device=cpu", "train.precision=fp32", "train.validate_every=0", "diffusion.sampling_steps=2"]
    assert vidiff_train(*argv) == 0
    pipe = VideoPipeline.from_pretrained(out / "export")
    assert type(pipe.transformer).__name__ == "UNet3D"
    assert pipe(PROMPT, seed=0, progress=False).frames.shape == (5, 32, 32, 3)

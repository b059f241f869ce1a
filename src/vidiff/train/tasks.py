"""Run a training recipe end to end: build the task, train with the Trainer, export.

    result = train_recipe(cfg, resume=False)         # VAE or diffusion run; exports at the end
    path = export_run(cfg)                           # from the newest checkpoint (EMA weights)
    cache = build_cache(cfg)                         # a diffusion run's latent cache alone

Run folder (`cfg.out_dir`): `ckpt-XXXXXXXX/` checkpoints, `log.jsonl`, `loss.png`,
`samples/step-XXXXXXXX/` validation outputs, and the export (`cfg.export_dir`, default
`<out_dir>/export`): a `VideoPipeline` folder for a diffusion run, a VAE folder (with its
latent mean/std) for a VAE run. Under torchrun every rank calls these functions; rank 0 writes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from vidiff.config import ConfigError, changed_keys, config_from_dict
from vidiff.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from vidiff.train.distributed import DistInfo, barrier, init_distributed
from vidiff.train.recipe import RunConfig, recipe_to_dict
from vidiff.train.trainer import Trainer, TrainResult

__all__ = ["train_recipe", "export_run", "build_cache", "export_dir_of", "load_run_vae", "changed_keys"]


def export_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.export_dir) if cfg.export_dir else Path(cfg.out_dir) / "export"


def load_run_vae(cfg: RunConfig) -> nn.Module:
    """The VAE a diffusion run encodes with (`vae.path`), with a config error if it is missing."""
    import json

    from vidiff.models.vae import CausalVAE3D, FrameVAE

    path = Path(cfg.vae.path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"vae.path {path}: no VAE folder there (train one first, e.g. "
                          "`vidiff train configs/world_vae.toml`, whose export is that folder)")
    try:
        name = json.loads((path / "config.json").read_text()).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"vae.path {path}: config.json is not valid JSON ({err})") from None
    classes = {"CausalVAE3D": CausalVAE3D, "FrameVAE": FrameVAE}
    if name not in classes:
        raise ConfigError(f"vae.path {path}: config.json names {name!r}, not one of {sorted(classes)}")
    return classes[name].from_pretrained(path).eval()


def _builder(cfg: RunConfig, vae: nn.Module | None):
    """Builds the run's model without its init weights: every caller loads a full state into it."""
    if cfg.task == "vae":
        from vidiff.train.vae_task import build_vae

        return lambda: build_vae(cfg, load_init=False)
    from vidiff.train.diffusion_task import build_diffusion_model

    return lambda: build_diffusion_model(cfg, vae.config.z_dim, load_init=False)


def _export(cfg: RunConfig, model: nn.Module, vae: nn.Module | None, export_dir: Path,
            device: torch.device | str = "cpu") -> Path:
    if cfg.task == "vae":
        from vidiff.train.vae_task import export_vae

        return export_vae(cfg, model, export_dir, device=device)
    from vidiff.train.diffusion_task import export_pipeline

    return export_pipeline(cfg, model, vae, export_dir)


def build_cache(cfg: RunConfig, dist: DistInfo | None = None, progress: bool = True) -> Path:
    """Encode a diffusion run's clips into its latent cache (a no-op when it is up to date)."""
    from vidiff.train.diffusion_task import ensure_latent_cache

    if cfg.task != "diffusion":
        raise ConfigError(f"only diffusion runs have a latent cache (this recipe has task = {cfg.task!r})")
    dist = dist or init_distributed(cfg.train.device)
    return ensure_latent_cache(cfg, load_run_vae(cfg), cfg.out_dir, device=dist.device, is_main=dist.is_main,
                               progress=progress)


def _warn_on_changed_recipe(cfg: RunConfig, dist: DistInfo, ckpt: Path | None) -> None:
    """On --resume from `ckpt`, name the recipe values that differ from the checkpoint's: some
    (train.steps) are meant to, others (model sizes) make the resume fail, the rest silently
    change the run."""
    import json
    import warnings

    if ckpt is None or not dist.is_main:
        return
    try:
        old = json.loads((ckpt / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return
    try:  # keys added to the recipe after the checkpoint was written take their defaults
        old = recipe_to_dict(config_from_dict(RunConfig, old, source=str(ckpt / "config.json")))
    except (ConfigError, TypeError, ValueError):
        pass
    changed = changed_keys(old, recipe_to_dict(cfg))
    if changed:
        warnings.warn(f"resuming {ckpt} with a recipe that differs from the one it was trained with in: "
                      f"{', '.join(changed[:12])}{' ...' if len(changed) > 12 else ''}", stacklevel=3)


def train_recipe(cfg: RunConfig, *, resume: bool = False, export: bool = True) -> TrainResult:
    """Train the recipe into `cfg.out_dir` (continuing from its newest checkpoint with `resume`),
    then export from the EMA weights when the run reached `train.steps`."""
    dist = init_distributed(cfg.train.device)
    out_dir = Path(cfg.out_dir)
    ckpt = latest_checkpoint(out_dir) if resume else None
    _warn_on_changed_recipe(cfg, dist, ckpt)
    # A resumed run takes its weights from the checkpoint: vae.init / model.init are not read.
    load_init = ckpt is None
    vae = None
    torch.manual_seed(cfg.train.seed)  # the initial weights follow the recipe's seed
    if cfg.task == "vae":
        from vidiff.train.vae_task import build_vae, make_vae_loss, make_vae_validate, vae_data

        model = build_vae(cfg, load_init=load_init)
        data = vae_data(cfg, dist.rank, dist.world_size)
        loss_fn = make_vae_loss(cfg)
        validate = make_vae_validate(cfg, out_dir)
    else:
        from vidiff.train.diffusion_task import (
            build_diffusion_model,
            diffusion_data,
            ensure_latent_cache,
            latent_cache_key,
            make_diffusion_loss,
            make_diffusion_validate,
        )

        vae = load_run_vae(cfg)
        cache = ensure_latent_cache(cfg, vae, out_dir, device=dist.device, is_main=dist.is_main,
                                    progress=cfg.train.progress)
        torch.manual_seed(cfg.train.seed)
        model = build_diffusion_model(cfg, vae.config.z_dim, load_init=load_init)
        data = diffusion_data(cfg, cache, dist.rank, dist.world_size, encoder_key=latent_cache_key(cfg, vae))
        loss_fn = make_diffusion_loss(cfg)
        validate = make_diffusion_validate(cfg, out_dir, vae, cache)
    trainer = Trainer(model, loss_fn, data, cfg.train, out_dir, validate_fn=validate,
                      run_config=recipe_to_dict(cfg), dist=dist)
    result = trainer.fit(resume=True if resume else None)
    if export and not result.interrupted and result.step >= cfg.train.steps:
        from vidiff.train.vae_task import ema_module

        final = ema_module(trainer, _builder(cfg, vae))
        if dist.is_main:
            _export(cfg, final, vae, export_dir_of(cfg), device=dist.device)
        barrier()
    return result


def export_run(cfg: RunConfig, export_dir: str | Path | None = None, checkpoint: str | Path | None = None) -> Path:
    """Export from a checkpoint (default: the newest in `cfg.out_dir`) with its EMA weights.

    The architecture is rebuilt from the recipe stored in the checkpoint, so the export matches
    what was trained even if the TOML changed since; the VAE is read from that recipe's vae.path.
    The exported sampling defaults (`DiffusionSection.SAMPLING_FIELDS`) are not part of what was
    trained and come from `cfg`, the recipe given now.
    """
    ckpt_path = Path(checkpoint) if checkpoint else latest_checkpoint(cfg.out_dir)
    if ckpt_path is None:
        raise CheckpointError(f"no checkpoint in {cfg.out_dir} to export from (train first)")
    ckpt = load_checkpoint(ckpt_path)
    try:
        run = config_from_dict(RunConfig, ckpt.config, source=str(ckpt_path / "config.json"))
    except ConfigError as err:
        raise CheckpointError(f"{ckpt_path / 'config.json'} is not a vidiff training recipe ({err})") from None
    if run.task == "diffusion":
        now = {name: getattr(cfg.diffusion, name) for name in cfg.diffusion.SAMPLING_FIELDS}
        run = replace(run, diffusion=replace(run.diffusion, **now))
    vae = load_run_vae(run) if run.task == "diffusion" else None
    model = _builder(run, vae)()
    state = dict(ckpt.model)
    if ckpt.ema is not None:
        state.update(ckpt.ema)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{ckpt_path / 'model.safetensors'} does not fit the recipe's model ({err})") from None
    target = Path(export_dir) if export_dir else export_dir_of(cfg)
    return _export(run, model.eval(), vae, target)

"""The VAE task: train a CausalVAE3D on world clips (or a video folder), validate by
reconstruction, export a VAE folder with its latent statistics.

    loss = vae_loss(x, recon, posterior; l1, mse, kl, temporal, edge weights)   (vidiff.models.vae_losses)

A run starts from fresh weights or from a trained VAE folder (`vae.init`); `vae.train = "decoder"`
freezes everything up to the latents (encoder and quant_conv) and fine-tunes the decoder alone.

World clips are rendered on the fly: batch p of rank r is the scenes of seeds drawn from a
generator seeded with (data.seed, r, p) (`SeededBatchStream`), so data order resumes exactly and
ranks see different clips. A folder of videos goes through `ResumableLoader` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidiff.data.loader import ResumableLoader, SeededBatchStream
from vidiff.models.vae import CausalVAE3D, estimate_latent_stats
from vidiff.models.vae_losses import vae_loss
from vidiff.train.recipe import RunConfig

__all__ = ["build_vae", "vae_data", "world_clip_batch", "make_vae_loss", "make_vae_validate", "export_vae",
           "reconstruction_psnr"]

_SEED_RANGE = 2**62


#: VAEConfig fields an init may differ in from the recipe (the recipe's values are used): set by
#: the export, or training-time behaviour without weights of their own.
NOT_ARCHITECTURE = ("latents_mean", "latents_std", "dropout", "clamp_output")

#: Parameters that make the latents; frozen by `vae.train = "decoder"`.
ENCODER_PREFIXES = ("encoder.", "quant_conv.")


def build_vae(cfg: RunConfig, load_init: bool = True) -> CausalVAE3D:
    """The recipe's VAE: fresh, or `vae.init`'s weights and latent stats when `load_init` (a
    run's start; the architectures must be equal, else a ConfigError names the differing keys;
    dropout and output clamping follow the recipe); with
    `vae.train = "decoder"` the encoder is frozen. Rebuilds that get their weights from a
    checkpoint or the EMA pass `load_init=False`."""
    from vidiff.config import ConfigError, changed_keys

    model = CausalVAE3D(cfg.vae.vae_config())
    if cfg.vae.init and load_init:
        if not Path(cfg.vae.init, "config.json").is_file():
            raise ConfigError(f"vae.init {cfg.vae.init}: no VAE folder there (no config.json inside)")
        source = CausalVAE3D.from_pretrained(cfg.vae.init)
        differ = [k for k in changed_keys(source.config.to_dict(), model.config.to_dict())
                  if k not in NOT_ARCHITECTURE]
        if differ:
            raise ConfigError(f"vae.init {cfg.vae.init}: its config differs from the recipe's in {', '.join(differ)}")
        model.load_state_dict(source.state_dict())
        model.set_latent_stats(source.latents_mean, source.latents_std)
    if cfg.vae.train == "decoder":
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith(ENCODER_PREFIXES))
    return model


def world_clip_batch(cfg: RunConfig, batch_size: int):
    """`make_batch(generator, position) -> {"video": [B, 3, F, H, W], "caption": [str]}` of world clips."""
    from vidiff.world import world_batch

    data = cfg.data

    def make_batch(g: torch.Generator, position: int) -> dict[str, Any]:
        seeds = torch.randint(0, _SEED_RANGE, (batch_size,), generator=g).tolist()
        video, captions, _ = world_batch(seeds, split=data.split, frames=data.frames, size=data.size, fps=data.fps)
        return {"video": video, "caption": captions}

    return make_batch


def _folder_dataset(cfg: RunConfig):
    from vidiff.data.folder import VideoFolderDataset

    d = cfg.data
    return VideoFolderDataset(d.folder, num_frames=d.frames, fps=d.fps, size=(d.size, d.size))


def vae_data(cfg: RunConfig, rank: int = 0, world_size: int = 1):
    """The resumable batch stream of a VAE run for this rank."""
    d = cfg.data
    if d.source == "world":
        return SeededBatchStream(world_clip_batch(cfg, d.batch_size), seed=d.seed, rank=rank, world_size=world_size)
    return ResumableLoader(_folder_dataset(cfg), d.batch_size, seed=d.seed, rank=rank, world_size=world_size,
                           num_workers=d.num_workers)


def make_vae_loss(cfg: RunConfig):
    """`loss_fn(model, batch, generator)` for the Trainer: the weighted VAE objective on a
    posterior sample drawn from the trainer's generator."""
    w = cfg.vae.loss

    def loss_fn(model, batch, generator: torch.Generator) -> torch.Tensor:
        x = batch["video"]
        recon, posterior = model(x, sample_posterior=True, generator=generator)
        return vae_loss(x, recon.float(), posterior, l1_weight=w.l1_weight, mse_weight=w.mse_weight,
                        kl_weight=w.kl_weight, temporal_weight=w.temporal_weight, edge_weight=w.edge_weight).total

    return loss_fn


def reconstruction_psnr(x: torch.Tensor, recon: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1]: `10 log10(4 / mean (x - recon)^2)` (peak-to-peak 2)."""
    mse = float((x.float() - recon.float()).square().mean())
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(4.0 / mse)).item()


def _validation_clips(cfg: RunConfig) -> tuple[torch.Tensor, list[str]]:
    """Fixed clips for validation, the same at every step and every resume: world scenes of seeds
    1 000 000 + i, or the folder's first clips."""
    from vidiff.world import world_batch

    d = cfg.data
    n = max(cfg.validation.clips, 1)
    if d.source == "folder":
        dataset = _folder_dataset(cfg)
        samples = [dataset.get(i % len(dataset), None) for i in range(n)]
        return torch.stack([s["video"] for s in samples]), [s["caption"] for s in samples]
    video, captions, _ = world_batch(range(10**6, 10**6 + n), split=d.split, frames=d.frames, size=d.size, fps=d.fps)
    return video, captions


def ema_module(trainer, build) -> torch.nn.Module:
    """A fresh CPU copy of the model with the trainer's EMA weights (its live weights when the run
    keeps no EMA). Collective under FSDP: every rank must call it."""
    state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in trainer.raw_model.state_dict().items()}
    if trainer.ema is not None:
        for k, v in trainer.ema.state_dict().items():
            state[k] = v.full_tensor() if hasattr(v, "full_tensor") else v
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; keep the global RNG as it was
        model = build()
    model.load_state_dict({k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.cpu()
                           for k, v in state.items()})
    return model.eval()


def make_vae_validate(cfg: RunConfig, out_dir: str | Path):
    """`validate_fn(trainer, step)`: reconstruct fixed clips with the EMA weights; rank 0 writes
    `samples/step-XXXXXXXX/recon.mp4` (input above, reconstruction below) and a contact sheet,
    and returns PSNR / L1."""
    from vidiff.video import contact_sheet, tensor_to_frames, write_video

    clips = None

    def validate(trainer, step: int) -> dict[str, float] | None:
        nonlocal clips
        model = ema_module(trainer, lambda: build_vae(cfg, load_init=False))
        if not trainer.dist.is_main:
            return None
        if clips is None:
            clips = _validation_clips(cfg)
        video, _ = clips
        device = trainer.device
        model.to(device)
        with torch.no_grad():
            recon = model.decode(model.encode(video.to(device)).mode()).float().cpu()
        folder = Path(out_dir) / "samples" / f"step-{step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(video.shape[0]):
            pair = torch.cat([video[i], recon[i]], dim=2)  # input above reconstruction
            rows.append(tensor_to_frames(pair))
        write_video(folder / "recon.mp4", np.concatenate(rows, axis=2), fps=cfg.data.fps)
        contact_sheet(rows, folder / "recon.png", labels=[f"clip {i}: input / reconstruction" for i in range(len(rows))])
        return {"psnr": reconstruction_psnr(video, recon), "l1": float((video - recon).abs().mean())}

    return validate


def _stats_batches(cfg: RunConfig, batch_size: int = 16):
    """Clips for the latent statistics: world scenes of seeds 2 000 000 + i (fixed, so the stats
    are reproducible; training draws its seeds from [0, 2^62)), or the folder's first clips."""
    from vidiff.world import world_batch

    d = cfg.data
    n = cfg.vae.stats_clips
    if d.source == "folder":
        dataset = _folder_dataset(cfg)
        for start in range(0, n, batch_size):
            idx = [i % len(dataset) for i in range(start, min(n, start + batch_size))]
            yield torch.stack([dataset.get(i, None)["video"] for i in idx])
        return
    for start in range(0, n, batch_size):
        seeds = range(2 * 10**6 + start, 2 * 10**6 + min(n, start + batch_size))
        yield world_batch(seeds, split=d.split, frames=d.frames, size=d.size, fps=d.fps)[0]


def export_vae(cfg: RunConfig, model: CausalVAE3D, export_dir: str | Path, device: str | torch.device = "cpu") -> Path:
    """Estimate the latent mean/std (posterior mode over `vae.stats_clips` clips), set them, and
    write the VAE folder (`save_pretrained`) to `export_dir`. A decoder-only run keeps the
    statistics it started with (`vae.init`'s, carried in the model's buffers): its latents are
    `init`'s, and so must their normalisation be."""
    model = model.to(device).eval()
    if cfg.vae.train == "decoder":
        mean, std = model.latents_mean.clone(), model.latents_std.clone()
    else:
        mean, std = estimate_latent_stats(model, (b.to(device) for b in _stats_batches(cfg)))
    model.set_latent_stats(mean, std)
    export_dir = Path(export_dir)
    model.cpu().save_pretrained(export_dir)
    return export_dir

"""The diffusion task: a latent denoiser (VideoDiT or UNet3D) and its text encoder, trained
jointly on cached VAE latents for text-to-video and image-to-video at once.

One training example (latents x0 `[B, C, F, H, W]`, normalised; captions):

    x0 <- x0[:, :, c:], first frame held  for the whole batch with probability midclip_prob (mid-clip start)
    captions[b] <- ""                       with probability caption_dropout (for CFG)
    frame_mask[b] = first latent frame      with probability i2v_prob (image-to-video)
                  | first k latent frames   with probability continuation_prob (long videos)
                  | first and last frames   with probability interpolation_prob (keyframes)
                  | no frame                otherwise (text-to-video)
    t  [B, F]    ~ logit-normal or uniform, shifted; one t per clip, or per frame with
                   probability independent_frame_prob; t ~ U(high_noise_from, 1] per clip with
                   probability high_noise_prob
    t = 0 where frame_mask = 1, or t_c ~ U(0, context_noise) per sample when context_noise > 0
    x_t = alpha(t) x0 + sigma(t) eps        (x_t = x0 exactly where t = 0)
    pred = model(x_t, t, Conditioning(text, text_mask[, frame_mask, image_latent]))
    loss = diffusion_loss(pred, x0, eps, t, schedule, prediction_type, frame_mask=frame_mask)
    loss += image_loss_weight * (the same on x0[:, :, :1], no held frame)   (image-video joint training)
    loss += word_loss_weight * WordRecoveryHead(text tokens, caption ids)    (no collapsed words)

so a held frame gets t = 0 (or the small context level t_c), is seen clean (or slightly noisy,
in x_t and in the image-latent channels alike), and counts for nothing in the loss, which is exactly
how `VideoPipeline` conditions on a first frame (per-frame time, plus the mask and latent
channels for models built with image_condition="concat"). All randomness comes from the
trainer's checkpointed generator, in a fixed order, so resume is exact.

Latents come from a cache (`vidiff.data.latent_cache`) built once per (VAE, data settings): the
VAE never runs during training.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from vidiff import diffusion as D
from vidiff.config import ConfigError, changed_keys
from vidiff.data.latent_cache import LatentCacheDataset, build_latent_cache, encoder_fingerprint
from vidiff.data.loader import ResumableLoader
from vidiff.data.weighting import caption_sampling_weights, weighted_shares
from vidiff.models.conditioning import Conditioning
from vidiff.train.recipe import DiffusionSection, RunConfig, denoiser_config

__all__ = [
    "DiffusionModel", "build_text_encoder", "build_denoiser", "build_diffusion_model", "uses_concat",
    "make_schedule", "sample_training_times", "make_diffusion_loss", "latent_cache_dir", "latent_cache_key",
    "cache_encoder",
    "cache_samples", "ensure_latent_cache", "diffusion_data", "scheduler_config", "pipeline_config",
    "make_pipeline", "make_diffusion_validate", "export_pipeline",
]


class DiffusionModel(nn.Module):
    """The trained unit: a denoiser and a text encoder (and, with `diffusion.word_loss_weight`,
    the training-only `WordRecoveryHead` on the encoder's output).

    `forward(x_t, t, captions, frame_mask=None, image_latent=None)` encodes the captions and
    denoises in one call, so that DDP sees (and synchronises) every parameter it touches; with
    `with_word_loss=True` it returns `(prediction, word recovery loss of these captions)`.
    """

    def __init__(self, denoiser: nn.Module, text_encoder: nn.Module, train_text: bool = True,
                 word_head: nn.Module | None = None):
        super().__init__()
        self.denoiser = denoiser
        self.text_encoder = text_encoder
        self.train_text = train_text
        self.word_head = word_head
        if not train_text:
            self.text_encoder.requires_grad_(False)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the denoiser's blocks in the backward pass (`train.gradient_checkpointing`)."""
        self.denoiser.gradient_checkpointing = True

    def encode_text(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        if self.train_text:
            return self.text_encoder.encode(list(captions))
        with torch.no_grad():
            return self.text_encoder.encode(list(captions))

    def forward(self, x_t: Tensor, t: Tensor, captions: list[str], frame_mask: Tensor | None = None,
                image_latent: Tensor | None = None, with_word_loss: bool = False):
        tokens, mask = self.encode_text(captions)
        cond = Conditioning(text=tokens.to(x_t.device), text_mask=mask.to(x_t.device),
                            frame_mask=frame_mask, image_latent=image_latent)
        pred = self.denoiser(x_t, t, cond)
        if not with_word_loss:
            return pred
        if self.word_head is None:
            raise ValueError("DiffusionModel: with_word_loss=True needs a word_head")
        enc = self.text_encoder
        ids, _ = enc.tokenizer.encode_ids(list(captions), enc.config.max_length, enc.config.pad_to_max_length)
        return pred, self.word_head(tokens, ids.to(tokens.device), mask)


def uses_concat(denoiser: nn.Module) -> bool:
    """Whether the denoiser takes frame_mask / image_latent as input channels: the rule
    `VideoPipeline.build_condition` applies at sampling time (a DiT with image_condition="concat")."""
    return getattr(getattr(denoiser, "config", None), "image_condition", None) == "concat"


def build_text_encoder(cfg: RunConfig) -> nn.Module:
    """`[model.text]`: a new BuiltinTextEncoder, or one loaded from `path`."""
    from vidiff.models.text import BuiltinTextEncoder

    t = cfg.model.text
    if t.path:
        if not Path(t.path).is_dir():
            raise ConfigError(f"model.text.path {t.path}: text encoder folder not found")
        return BuiltinTextEncoder.from_pretrained(t.path)
    return BuiltinTextEncoder.create(dim=t.dim, depth=t.depth, num_heads=t.num_heads, mlp_ratio=t.mlp_ratio,
                                     max_length=t.max_length, dropout=t.dropout)


def build_denoiser(cfg: RunConfig, z_dim: int, text_dim: int) -> nn.Module:
    """The `[model]` denoiser, its channels and text width filled in from (or checked against) the
    VAE's z_dim and the text encoder's width (see `recipe.denoiser_config`)."""
    from vidiff.models.dit import VideoDiT
    from vidiff.models.unet import UNet3D

    config = denoiser_config(cfg.model, z_dim, text_dim, vae_note=f"the VAE at {cfg.vae.path} has z_dim {z_dim}")
    if cfg.model.kind == "dit":
        if config.image_condition == "preconcat":
            raise ConfigError("model.dit.image_condition = 'preconcat' cannot be trained here; use 'concat' "
                              "(the model assembles mask and latent channels) or 'none'")
        return VideoDiT(config)
    if config.image_conditioning:
        # VideoPipeline gives a UNet its held frames through per-frame time only; channels that are
        # filled in training but left empty at sampling time would be a train/test mismatch.
        raise ConfigError("model.unet.image_conditioning = true is not supported: VideoPipeline conditions UNets "
                          "through per-frame time only (set it to false)")
    return UNet3D(config)


_SAME_PARAMETERS = {"full", "causal", "spatial"}  # attention modes that differ only in their mask


def init_from_pipeline(denoiser: nn.Module, text_encoder: nn.Module, directory: str,
                       expand_depth: bool = False) -> None:
    """Copy an exported pipeline's denoiser and text-encoder weights into freshly built modules
    (`[model] init`); the folder's configs must equal the recipe's, else ConfigError names them.
    Two differences that keep the parameters are allowed: `gradient_checkpointing`, and the
    attention mask among "full", "causal" and "spatial" (e.g. fine-tune a full-attention model
    into a causal one for streaming; "factorized" has its own temporal layers).
    With `expand_depth` the recipe's DiT may have k times the folder's blocks: the folder's
    transformer is grown first (`vidiff.models.growth.expand_depth`, the same function)."""
    from vidiff.models.growth import expand_depth as grow
    from vidiff.models.text import BuiltinTextEncoder
    from vidiff.pipelines.pipeline import load_denoiser

    if not Path(directory, "transformer").is_dir():
        raise ConfigError(f"model.init {directory}: not a pipeline folder (no transformer/ inside)")
    pairs = ((load_denoiser(str(Path(directory, "transformer"))), denoiser, "transformer"),
             (BuiltinTextEncoder.from_pretrained(str(Path(directory, "text_encoder"))), text_encoder, "text_encoder"))
    for source, target, name in pairs:
        differ = [k for k in changed_keys(source.config.to_dict(), target.config.to_dict())
                  if k != "gradient_checkpointing"
                  and not (k == "attention" and {source.config.attention, target.config.attention} <= _SAME_PARAMETERS)]
        if expand_depth and name == "transformer" and differ == ["num_layers"]:
            try:
                source, differ = grow(source, target.config.num_layers), []
            except ValueError as err:
                raise ConfigError(f"model.init {directory}/{name}: {err}") from None
        if type(source) is not type(target) or differ:
            raise ConfigError(f"model.init {directory}/{name}: its config differs from the recipe's in "
                              f"{', '.join(differ) or 'class'} ({type(source).__name__} vs {type(target).__name__})")
        target.load_state_dict(source.state_dict())


def build_diffusion_model(cfg: RunConfig, z_dim: int, load_init: bool = True) -> DiffusionModel:
    """The recipe's denoiser and text encoder, with `model.init`'s weights when `load_init`
    (a run's start); rebuilds that get their weights from a checkpoint or the EMA pass False."""
    text = build_text_encoder(cfg)
    denoiser = build_denoiser(cfg, z_dim, text.dim)
    if cfg.model.init and load_init:
        init_from_pipeline(denoiser, text, cfg.model.init, cfg.model.init_expand_depth)
    word_head = None
    if cfg.diffusion.word_loss_weight > 0:
        from vidiff.models.text import BuiltinTextEncoder, WordRecoveryHead

        if not isinstance(text, BuiltinTextEncoder) or not cfg.model.text.train:
            raise ConfigError("diffusion.word_loss_weight > 0 needs the built-in text encoder trained jointly "
                              "(model.text.train = true)")
        # Drawn from its own seed, not from whatever the denoiser's build left of the global RNG:
        # otherwise two runs that differ only in depth would also start with different word heads.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            word_head = WordRecoveryHead(text.tokenizer.vocab_size, text.dim)
    return DiffusionModel(denoiser, text, train_text=cfg.model.text.train, word_head=word_head)


def make_schedule(d: DiffusionSection):
    if d.schedule == "flow":
        return D.FlowSchedule()
    return D.vp_schedule(d.schedule, d.num_train_steps, zero_terminal_snr=d.zero_terminal_snr)


def sample_training_times(d: DiffusionSection, batch: int, frames: int, generator: torch.Generator,
                          device: torch.device | str | None = None) -> Tensor:
    """Training times `[B, F]`: one draw per clip (repeated over frames), replaced by independent
    per-frame draws for a share `independent_frame_prob` of the clips, then for a share
    `high_noise_prob` by one draw per clip from the band `(high_noise_from, 1]`:

        t = 1 - (1 - high_noise_from) u,   u ~ U[0, 1)

    (the band's draws are made only when `high_noise_prob > 0`, so other recipes keep their
    random stream)."""

    def draw(per_frame: int | None) -> Tensor:
        if d.timesteps == "logit_normal":
            return D.logit_normal_timesteps(batch, mean=d.logit_mean, std=d.logit_std, frames=per_frame,
                                            shift=d.shift, generator=generator, device=device)
        return D.uniform_timesteps(batch, frames=per_frame, shift=d.shift, generator=generator, device=device)

    t = D.per_frame_time(draw(None), frames)
    if d.independent_frame_prob > 0:
        independent = draw(frames)
        pick = torch.rand(batch, generator=generator, device=device) < d.independent_frame_prob
        t = torch.where(pick[:, None], independent, t)
    if d.high_noise_prob > 0:
        pick = torch.rand(batch, generator=generator, device=device) < d.high_noise_prob
        band = 1.0 - (1.0 - d.high_noise_from) * torch.rand(batch, generator=generator, device=device)
        t = torch.where(pick[:, None], band[:, None].to(t.dtype), t)
    return t.contiguous()


def training_frame_mask(d: DiffusionSection, batch: int, frames: int, generator: torch.Generator,
                        device: torch.device | str = "cpu") -> Tensor:
    """Which latent frames each training sample holds clean, `[B, F]` float in {0, 1}.

    One uniform draw u per sample picks the task (p_i = i2v_prob, p_c = continuation_prob,
    p_k = interpolation_prob):

        u < p_i               -> frame 0                  (image-to-video)
        u < p_i + p_c         -> frames 0 .. k-1, k ~ U{1, ..., min(max_context_frames, F - 1)}
        u < p_i + p_c + p_k   -> frames 0 and F - 1       (both ends of an in-between)
        otherwise             -> none                     (text-to-video)

    Both draws are made for every sample, so the generator advances the same way whatever the
    probabilities (exact resume).
    """
    u = torch.rand(batch, generator=generator, device=device)
    k_max = max(1, min(d.max_context_frames, frames - 1))
    k = torch.randint(1, k_max + 1, (batch,), generator=generator, device=device)
    index = torch.arange(frames, device=device)[None, :]
    i2v = (u < d.i2v_prob)[:, None] & (index == 0)
    cont_rows = (u >= d.i2v_prob) & (u < d.i2v_prob + d.continuation_prob)
    cont = cont_rows[:, None] & (index < k[:, None])
    lo = d.i2v_prob + d.continuation_prob
    interp_rows = (u >= lo) & (u < lo + d.interpolation_prob)
    interp = interp_rows[:, None] & ((index == 0) | (index == frames - 1))
    return (i2v | cont | interp).float()


def make_diffusion_loss(cfg: RunConfig):
    """`loss_fn(model, batch, generator)`: see the module docstring. `batch` is
    `{"latents": [B, C, F, H, W], "caption": [str] * B}`."""
    d = cfg.diffusion
    schedule = make_schedule(d)

    def denoising_loss(model: nn.Module, x0: Tensor, captions: list[str], generator: torch.Generator,
                       video: bool, hold_first: bool = False) -> Tensor:
        """The diffusion loss of one batch: for `video` clips with held frames (and context noise)
        and the weighted word loss of the captions; otherwise (one-frame image clips) neither.
        `hold_first`: every sample holds its first latent frame (mid-clip crops)."""
        b, _, f = x0.shape[:3]
        device = x0.device
        gen_device = generator.device
        drop = (torch.rand(b, generator=generator, device=gen_device) < d.caption_dropout).tolist()
        captions = ["" if dropped else c for c, dropped in zip(captions, drop)]
        if video:
            frame_mask = training_frame_mask(d, b, f, generator, gen_device).to(device)
            if hold_first:
                frame_mask[:, 0] = 1.0
        else:
            frame_mask = x0.new_zeros(b, f)
        t = sample_training_times(d, b, f, generator, gen_device).to(device)
        eps = torch.randn(x0.shape, generator=generator, device=gen_device).to(device)
        t_held = 0.0
        if video and d.context_noise > 0:  # drawn only then, so recipes without it keep their random stream
            t_held = torch.rand(b, generator=generator, device=gen_device).to(device) * d.context_noise
        x_t, t = D.add_noise(x0, eps, t, schedule, frame_mask, held_time=t_held)
        raw = model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
        mask_in = latent_in = None
        if uses_concat(raw.denoiser):
            mask_in = frame_mask
            latent_in = torch.where(frame_mask.bool()[:, None, :, None, None], x_t, torch.zeros_like(x0))
        if video and d.word_loss_weight > 0:
            pred, word_loss = model(x_t, t, captions, frame_mask=mask_in, image_latent=latent_in, with_word_loss=True)
            word_loss = d.word_loss_weight * word_loss
        else:
            pred, word_loss = model(x_t, t, captions, frame_mask=mask_in, image_latent=latent_in), 0.0
        weights = D.foreground_weights(x0, d.foreground_weight) if video and d.foreground_weight > 0 else None
        return D.diffusion_loss(pred.float(), x0, eps, t, schedule, d.prediction_type, frame_mask=frame_mask,
                                position_weights=weights) + word_loss

    def loss_fn(model: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> Tensor:
        x0 = batch["latents"].float()
        captions = list(batch["caption"])
        clip, hold_first = x0, False
        if d.midclip_prob > 0:  # drawn only then, so recipes without it keep their random stream
            gen_device = generator.device
            crop = bool(torch.rand((), generator=generator, device=gen_device) < d.midclip_prob)
            start = int(torch.randint(1, max(1, (x0.shape[2] - 1) // 2) + 1, (), generator=generator, device=gen_device))
            if crop and x0.shape[2] - start >= 2:
                clip, hold_first = x0[:, :, start:], True
        loss = denoising_loss(model, clip, captions, generator, video=True, hold_first=hold_first)
        if d.image_loss_weight > 0:  # drawn after the video's, so the video's random stream is unchanged
            loss = loss + d.image_loss_weight * denoising_loss(model, x0[:, :, :1], captions, generator, video=False)
        return loss

    return loss_fn


# ------------------------------------------------------------------------------------------------
# Latent cache


def latent_cache_dir(cfg: RunConfig, out_dir: str | Path) -> Path:
    return Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(out_dir) / "latents"


def latent_cache_key(cfg: RunConfig, vae: nn.Module) -> str:
    """Fingerprint of the VAE (config and weights) and of the clips that go into the cache."""
    d = cfg.data
    clips = {"source": d.source, "folder": d.folder, "frames": d.frames, "size": d.size, "fps": d.fps,
             "split": d.split, "num_objects": d.num_objects, "seed": d.seed, "clips": d.cache_clips}
    return encoder_fingerprint({"vae": vae.config.to_dict(), "clips": clips, "latents": "normalised posterior mode"}, vae)


def cache_encoder(vae: nn.Module) -> Callable[[Tensor], Tensor]:
    """What a latent cache stores of a video batch: the VAE posterior's mode, normalised
    (`latent_cache_key` names this)."""
    return lambda video: vae.normalize(vae.encode(video).mode())


def cache_samples(cfg: RunConfig):
    """The clips a cache holds: {"video": [3, F, H, W], "caption", "name"}, `data.cache_clips` of them."""
    d = cfg.data
    if d.source == "folder":
        from vidiff.data.folder import VideoFolderDataset

        dataset = VideoFolderDataset(d.folder, num_frames=d.frames, fps=d.fps, size=(d.size, d.size))
        for i, sample in enumerate(dataset.iter_clips()):
            if i >= d.cache_clips:
                return
            yield {"video": sample["video"], "caption": sample["caption"], "name": sample["name"]}
        return
    from vidiff.world import WorldDataset
    from vidiff.world.dataset import ordered_clips

    world = WorldDataset(frames=d.frames, size=d.size, fps=d.fps, split=d.split, seed=d.seed,
                         num_samples=d.cache_clips, num_objects=d.num_objects)
    for v, c, m in ordered_clips(world, workers=d.cache_workers):
        yield {"video": v, "caption": c, "name": f"world-{d.seed}-{m['index']}"}


def ensure_latent_cache(cfg: RunConfig, vae: nn.Module, out_dir: str | Path, *, device: str | torch.device = "cpu",
                        is_main: bool = True, progress: bool = True) -> Path:
    """Build the latent cache if it is missing or was built with another VAE / other clips (rank 0;
    the others wait at a barrier), and return its folder."""
    from vidiff.train.distributed import barrier

    root = latent_cache_dir(cfg, out_dir)
    key = latent_cache_key(cfg, vae)
    if is_main:
        vae = vae.to(device).eval()
        samples = cache_samples(cfg)
        if progress:
            samples = _progress(samples, cfg.data.cache_clips, f"latent cache {root}")
        build_latent_cache(samples, cache_encoder(vae), root, encoder_key=key, batch_size=cfg.data.cache_batch_size,
                           shard_size=1024, device=device)
        vae.cpu()
    barrier()
    return root


def _progress(items, total: int, desc: str):
    import sys

    from tqdm.auto import tqdm

    # Only shown when the cache actually needs building (an up-to-date cache returns before iterating).
    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"latents": torch.stack([s["latents"] for s in samples]), "caption": [s["caption"] for s in samples]}


def diffusion_data(cfg: RunConfig, cache: str | Path, rank: int = 0, world_size: int = 1, *,
                   encoder_key: str | None = None) -> ResumableLoader:
    """Epochs over the cached latents, shuffled per epoch, a distinct shard per rank; with
    `data.caption_weights` each epoch draws clips by their captions' weights instead."""
    dataset = LatentCacheDataset(cache, encoder_key=encoder_key, in_memory=cfg.data.cache_in_memory)
    weights = None
    if cfg.data.caption_weights:
        captions = dataset.captions()
        try:
            weights = caption_sampling_weights(captions, cfg.data.caption_weights)
        except ValueError as err:
            raise ValueError(f"data.caption_weights on the cache {cache}: {err}") from None
        if rank == 0:
            for phrase, (share, drawn) in weighted_shares(captions, weights, list(cfg.data.caption_weights)).items():
                print(f"vidiff: data.caption_weights: {phrase!r} is in {share:.1%} of the {len(captions)} cached "
                      f"clips, {drawn:.1%} of the draws", file=sys.stderr)
    return ResumableLoader(dataset, cfg.data.batch_size, seed=cfg.data.seed, rank=rank, world_size=world_size,
                           num_workers=cfg.data.num_workers, collate_fn=_collate, weights=weights)


# ------------------------------------------------------------------------------------------------
# Pipeline: validation samples and export


def scheduler_config(cfg: RunConfig, *, steps: int | None = None, guidance_scale: float | None = None):
    from vidiff.pipelines import SchedulerConfig

    d = cfg.diffusion
    return SchedulerConfig(schedule=d.schedule, prediction_type=d.prediction_type, sampler=d.sampler,
                           num_inference_steps=steps or d.sampling_steps, shift=d.sampling_shift,
                           guidance_scale=d.guidance_scale if guidance_scale is None else guidance_scale,
                           num_train_steps=d.num_train_steps, zero_terminal_snr=d.zero_terminal_snr,
                           context_noise=d.sampling_context_noise)


def pipeline_config(cfg: RunConfig):
    from vidiff.pipelines import PipelineConfig

    d = cfg.data
    return PipelineConfig(num_frames=d.frames, height=d.size, width=d.size, fps=d.fps, image_conditioning="clean_frames")


def make_pipeline(cfg: RunConfig, model: DiffusionModel, vae: nn.Module, **scheduler_kw):
    from vidiff.pipelines import VideoPipeline

    return VideoPipeline(model.denoiser.eval(), vae.eval(), model.text_encoder.eval(),
                         scheduler_config(cfg, **scheduler_kw), pipeline_config(cfg))


@torch.no_grad()
def fixed_noise_loss(cfg: RunConfig, model: DiffusionModel, latents: Tensor, captions: list[str],
                     device: torch.device | str = "cpu", seed: int = 0) -> float:
    """The training loss on fixed clips with fixed noise and times (no dropout, no held frame):
    comparable across steps and runs with the same data."""
    d = cfg.diffusion
    schedule = make_schedule(d)
    g = torch.Generator().manual_seed(seed)
    b, _, f = latents.shape[:3]
    t = torch.linspace(0.05, 0.95, b)[:, None].expand(b, f).contiguous()
    eps = torch.randn(latents.shape, generator=g)
    x0 = latents.float()
    x_t, t = D.add_noise(x0, eps, t, schedule)
    pred = model(x_t.to(device), t.to(device), captions).float().cpu()
    return float(D.diffusion_loss(pred, x0, eps, t, schedule, d.prediction_type))


def make_diffusion_validate(cfg: RunConfig, out_dir: str | Path, vae: nn.Module, cache: str | Path):
    """`validate_fn(trainer, step)`: with the EMA weights, rank 0 samples the fixed prompts/seeds
    and image-to-video from fixed world first frames, writes one mp4 per sample and a contact
    sheet under `samples/step-XXXXXXXX/`, and returns the fixed-noise loss."""
    from vidiff.train.vae_task import ema_module

    val = cfg.validation
    z_dim = vae.config.z_dim
    fixed: dict[str, Any] = {}

    def validate(trainer, step: int) -> dict[str, float] | None:
        model = ema_module(trainer, lambda: build_diffusion_model(cfg, z_dim, load_init=False))
        if not trainer.dist.is_main:
            return None
        device = trainer.device
        model.to(device)
        vae.to(device)
        metrics: dict[str, float] = {}
        if val.loss_clips:
            if "latents" not in fixed:
                data = LatentCacheDataset(cache)
                items = [data.get(i) for i in range(min(val.loss_clips, len(data)))]
                fixed["latents"] = torch.stack([s["latents"] for s in items])
                fixed["captions"] = [s["caption"] for s in items]
            metrics["loss"] = fixed_noise_loss(cfg, model, fixed["latents"], fixed["captions"], device)
        write_samples(cfg, model, vae, Path(out_dir) / "samples" / f"step-{step:08d}", device=device)
        vae.cpu()
        return metrics

    return validate


def write_samples(cfg: RunConfig, model: DiffusionModel, vae: nn.Module, folder: Path,
                  device: torch.device | str = "cpu") -> list[Path]:
    """Text-to-video for each (prompt, seed) and image-to-video for each world seed in
    `validation.i2v_seeds` (with the true clip beside it); mp4s plus `sheet.png`."""
    from vidiff.video import contact_sheet, write_video
    from vidiff.world import world_batch

    val, d = cfg.validation, cfg.data
    pipe = make_pipeline(cfg, model, vae, steps=val.steps, guidance_scale=val.guidance_scale).to(device)
    folder.mkdir(parents=True, exist_ok=True)
    rows, labels, written = [], [], []
    for k, prompt in enumerate(val.prompts):
        for seed in val.seeds:
            frames = pipe(prompt, seed=seed, progress=False).frames
            written.append(Path(write_video(folder / f"t2v-{k:02d}-seed{seed}.mp4", frames, fps=d.fps)))
            rows.append(frames)
            labels.append(f"{prompt} (seed {seed})")
    if val.i2v_seeds:
        video, captions, _ = world_batch(val.i2v_seeds, split=d.split, frames=d.frames, size=d.size, fps=d.fps)
        for seed, clip, caption in zip(val.i2v_seeds, video, captions):
            truth = ((clip.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            frames = pipe(caption, image=truth[0], seed=0, progress=False).frames
            written.append(Path(write_video(folder / f"i2v-world{seed}.mp4", frames, fps=d.fps)))
            rows += [frames, truth]
            labels += [f"i2v: {caption}", "  the true clip"]
    contact_sheet([np.asarray(r) for r in rows], folder / "sheet.png", labels=labels)
    written.append(folder / "sheet.png")
    return written


def export_pipeline(cfg: RunConfig, model: DiffusionModel, vae: nn.Module, export_dir: str | Path) -> Path:
    """Write a complete `VideoPipeline` folder (denoiser, VAE, text encoder, scheduler)."""
    pipe = make_pipeline(cfg, model.cpu(), vae.cpu())
    pipe.save_pretrained(export_dir)
    return Path(export_dir)

"""Training recipes: the TOML tables of a `vidiff train` run as nested dataclasses.

A recipe is one TOML file (see `configs/*.toml`)::

    task = "vae" | "diffusion"
    out_dir = "runs/world_dit"          # checkpoints, log.jsonl, loss.png, samples/
    export_dir = ""                     # default: <out_dir>/export

    [model]        kind = "dit" | "unet"; [model.dit] DiTConfig / [model.unet] UNetConfig fields
                   (channels and text width follow the VAE and text encoder when left out);
                   [model.text] the built-in text encoder, trained jointly
    [vae]          diffusion: `path` of the trained VAE folder; vae task: `preset` plus
                   [vae.config] VAEConfig fields, [vae.loss] weights, `stats_clips`
    [data]         world clips (rendered on the fly) or a folder of captioned videos; batch size;
                   for diffusion the latent cache those clips are encoded into
    [diffusion]    schedule, prediction type, training timesteps, caption dropout, i2v share,
                   and the sampling defaults written into the exported pipeline
    [train]        TrainConfig (optimiser, steps, EMA, checkpoints, validation period, ...)
    [validation]   fixed prompts / seeds for the periodic samples

`load_recipe(path, ["train.lr=3e-4"])` reads, overrides and validates; an unknown key anywhere
is a `ConfigError` naming the dotted key and the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from vidiff.config import ConfigError, config_to_dict, load_config
from vidiff.data.weighting import check_phrase_weights
from vidiff.models.dit import DiTConfig
from vidiff.models.unet import UNetConfig
from vidiff.models.vae import VAEConfig
from vidiff.train.trainer import TrainConfig

__all__ = [
    "RunConfig", "ModelSection", "TextSection", "VAESection", "VAELossSection", "DataSection",
    "DiffusionSection", "ValidationSection", "load_recipe", "recipe_to_dict", "denoiser_config",
]

DEFAULT_PROMPTS = (
    "a large red circle moves right on a black background",
    "a small yellow square bounces on a gray background",
    "a large cyan triangle spins on a navy background",
    "a small white diamond moves up and a large green circle stays still on a checkered background",
)


@dataclass
class TextSection:
    """`[model.text]`: `path` = "" builds a new BuiltinTextEncoder (shapes-world vocabulary) of the
    given size; otherwise a saved built-in encoder folder is loaded (its own size wins).
    `train` trains it jointly with the denoiser (frozen when false)."""

    path: str = ""
    train: bool = True
    dim: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: int = 4
    max_length: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"model.text.dim={self.dim} is not divisible by model.text.num_heads={self.num_heads}")


@dataclass
class ModelSection:
    """`[model]`: which denoiser, and its hyper-parameters as a `[model.dit]` (DiTConfig) or
    `[model.unet]` (UNetConfig) table (the other kind's table is ignored).

    Channels and text width follow the VAE and the text encoder: `in_channels`, `out_channels`
    and `text_dim` may be left out (a DiT with image_condition = "concat" then gets
    in_channels = 2 z_dim + mask_channels); when given they must fit, and the task names the key
    that does not.

    init: an exported pipeline folder (e.g. the shipped `src/vidiff/assets/world-dit`) whose
    denoiser and text-encoder weights the run starts from, to continue training a shipped model
    with a fresh optimizer; its configs must equal the recipe's.
    init_expand_depth: let a DiT recipe have k times as many blocks as `init`'s transformer (its
    only difference): each block is followed by k - 1 copies that start as the identity
    (`vidiff.models.growth.expand_depth`), so training starts from the same function, deeper."""

    kind: Literal["dit", "unet"] = "dit"
    dit: dict[str, Any] = field(default_factory=dict)
    unet: dict[str, Any] = field(default_factory=dict)
    text: TextSection = field(default_factory=TextSection)
    init: str | None = None
    init_expand_depth: bool = False

    def __post_init__(self) -> None:
        if self.init_expand_depth and (not self.init or self.kind != "dit"):
            raise ValueError(f"model.init_expand_depth = true needs model.init (a pipeline folder) and kind = \"dit\", "
                             f"got init = {self.init!r}, kind = {self.kind!r}")
        table = self.dit if self.kind == "dit" else self.unet
        z_dim = int(table.get("out_channels") or table.get("in_channels") or 8)
        try:
            denoiser_config(self, z_dim, int(table.get("text_dim") or self.text.dim), check=False)
        except ConfigError as err:
            raise ValueError(str(err)) from None  # plain ValueError: the loader adds the file name


def denoiser_config(model: ModelSection, z_dim: int, text_dim: int, *, check: bool = True,
                    vae_note: str = "") -> DiTConfig | UNetConfig:
    """The `[model.dit]` / `[model.unet]` table as a config, with channels and text width filled
    in from the VAE's `z_dim` and the text encoder's `text_dim` where the table leaves them out.
    With `check`, given values that disagree raise ConfigError naming the key."""
    kind = model.kind
    table = dict(model.dit if kind == "dit" else model.unet)
    cls = DiTConfig if kind == "dit" else UNetConfig
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown key 'model.{kind}.{unknown[0]}' ({cls.__name__} keys: {', '.join(sorted(known))})")
    note = vae_note or f"the VAE has z_dim {z_dim}"
    expected = {"out_channels": (z_dim, note), "text_dim": (text_dim, f"the text encoder's width is {text_dim}")}
    if kind == "unet" or table.get("image_condition", "none") == "none":
        expected["in_channels"] = (z_dim, note)
    elif table.get("image_condition") == "concat":
        mask = int(table.get("mask_channels", DiTConfig.mask_channels))
        expected["in_channels"] = (2 * z_dim + mask, f"{note} (concat input: 2 x {z_dim} + {mask} mask channels)")
    for key, (value, why) in expected.items():
        if key not in table or table[key] is None:
            table[key] = value
        elif check and table[key] != value:
            raise ConfigError(f"model.{kind}.{key} = {table[key]} but {why}")
    try:
        return cls.from_dict(table)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[model.{kind}]: {err}") from None


@dataclass
class VAELossSection:
    """`[vae.loss]`: weights of `vidiff.models.vae_losses.vae_loss`."""

    l1_weight: float = 1.0
    mse_weight: float = 1.0
    kl_weight: float = 1e-4
    temporal_weight: float = 0.5
    edge_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("l1_weight", "mse_weight", "kl_weight", "temporal_weight", "edge_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"vae.loss.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class VAESection:
    """`[vae]`: `path` (diffusion runs) is the VAE folder to encode with (a VAE run's export).
    VAE runs train the architecture `preset` ("world": `VAEConfig.world()`, "wan21": Wan 2.1's)
    with the `[vae.config]` values replacing the preset's; `stats_clips` clips estimate the
    latent mean/std written with the exported VAE.

    `init`: a VAE folder (an export, e.g. `src/vidiff/assets/world-dit/vae`) whose weights start
    the run; its architecture must equal the recipe's. `train = "decoder"` (needs `init`) freezes
    the encoder: the latents stay exactly those of `init`, so every diffusion model trained on
    them keeps working with the new decoder, and the export keeps `init`'s latent mean/std
    (decoder fine-tuning, as Stable Diffusion's ft-MSE VAE was made)."""

    path: str = ""
    preset: Literal["world", "wan21"] = "world"
    config: dict[str, Any] = field(default_factory=dict)
    loss: VAELossSection = field(default_factory=VAELossSection)
    stats_clips: int = 256
    init: str = ""
    train: Literal["all", "decoder"] = "all"

    def __post_init__(self) -> None:
        if self.stats_clips < 1:
            raise ValueError(f"vae.stats_clips must be >= 1, got {self.stats_clips}")
        if self.train == "decoder" and not self.init:
            raise ValueError("vae.train = \"decoder\" needs vae.init (the VAE whose encoder stays frozen)")
        try:
            self.vae_config()
        except ConfigError as err:
            raise ValueError(str(err)) from None  # plain ValueError: the loader adds the file name

    def vae_config(self) -> VAEConfig:
        """The preset with `[vae.config]` applied."""
        known = set(VAEConfig.__dataclass_fields__)
        unknown = sorted(set(self.config) - known)
        if unknown:
            raise ConfigError(f"unknown key 'vae.config.{unknown[0]}' (VAEConfig keys: {', '.join(sorted(known))})")
        try:
            if self.preset == "world":
                return VAEConfig.world(**self.config)
            return VAEConfig(**self.config)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"[vae.config]: {err}") from None


@dataclass
class DataSection:
    """`[data]`: where clips come from and how they are batched.

    source "world": shapes-world clips of `frames` x `size` x `size` rendered from `seed`
    (`split`, `num_objects` as in WorldDataset); "folder": `folder`/captions.jsonl videos.
    A VAE run trains on these clips directly; a diffusion run trains on their latents, encoded
    once into `cache_dir` (`cache_clips` clips; "" = <out_dir>/latents) and re-used by every run
    with the same VAE and data settings. `cache_workers` processes render world clips for the
    cache in parallel (the cache is the same, clip for clip, whatever their number); with
    `cache_in_memory` a run reads the whole cache into memory once instead of opening a shard
    per sample (about 37 KB a clip for the world latents; what a GPU's batches need to keep up).
    `caption_weights` (diffusion runs) maps caption phrases to sampling factors: a cached clip is
    drawn in proportion to the product of the factors of the phrases its caption names (whole
    words), e.g. `caption_weights = { spins = 4.0 }` or `data.caption_weights.spins=4`.
    """

    source: Literal["world", "folder"] = "world"
    folder: str = ""
    frames: int = 17
    size: int = 64
    fps: float = 8.0
    split: Literal["train", "heldout", "any"] = "train"
    num_objects: int | None = None
    batch_size: int = 8
    num_workers: int = 0
    seed: int = 0
    cache_dir: str = ""
    cache_clips: int = 4096
    cache_batch_size: int = 16
    cache_workers: int = 0
    cache_in_memory: bool = False
    caption_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source == "folder" and not self.folder:
            raise ValueError("data.source='folder' needs data.folder (a directory with captions.jsonl)")
        for name in ("frames", "size", "batch_size", "cache_clips", "cache_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "cache_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        if self.num_objects not in (None, 1, 2):
            raise ValueError(f"data.num_objects must be 1, 2 or none, got {self.num_objects}")
        try:
            check_phrase_weights(self.caption_weights)
        except ValueError as err:
            raise ValueError(f"data.caption_weights: {err}") from None


@dataclass
class DiffusionSection:
    """`[diffusion]`: the training objective and the sampling defaults of the exported pipeline.

    schedule / prediction_type: "flow" + "flow" is rectified flow; a VP beta table ("linear",
        "scaled_linear", "cosine") takes "eps", "x0" or "v".
    timesteps: "logit_normal" (t = sigmoid(logit_mean + logit_std n)) or "uniform", then the
        timestep shift `shift t / (1 + (shift - 1) t)`.
    high_noise_prob, high_noise_from: share of clips whose time is redrawn uniformly from the
        band `(high_noise_from, 1]`, where x_t is (almost) pure noise and the caption is all there
        is to go by. Logit-normal times with shift 3 put only ~0.26 % of clips above t = 0.98, so
        the first sampling steps (t = 1, 0.99, ...) run where the model was never trained: it
        reads layout and direction off the noise instead of the caption. 0: off.
    independent_frame_prob: share of samples whose frames draw independent times `[B, F]`
        (diffusion-forcing style; helps continuation); the rest share one t per clip.
    caption_dropout: share of captions replaced by "" (classifier-free guidance).
    i2v_prob: share of samples whose first latent frame is held clean (t = 0, excluded from the
        loss; given as frame_mask / image_latent to models that concatenate them).
    continuation_prob: share whose first k latent frames are held, k uniform in
        1..max_context_frames (sliding-window continuation of a long video).
    interpolation_prob: share whose first and last latent frames are held (keyframe in-betweening).
    midclip_prob: share of steps whose batch starts mid-clip: its latents are cropped to frames
        c .. F - 1, c ~ U{1, ..., (F - 1) // 2} (one draw per step), and every sample holds at least
        its first latent frame (text-to-video samples become one-frame continuations). With a
        causal VAE (r > 1) a clip's first latent codes one frame and every later one r frames, so
        only a crop shows the model what sliding windows hold at their start (the previous
        window's last latent, an r-frame chunk) and keyframe gaps at both ends. The image loss
        keeps the uncropped first frame. 0: off.
    context_noise: held frames are noised to a level `t_c ~ U(0, context_noise)` per sample
        (given to the model as their per-frame time, and as the image-latent channels), so that
        the model learns not to copy its context's small errors: noise augmentation of the
        context against autoregressive drift (GameNGen, Valevski et al. 2024). 0 holds them clean.
    image_loss_weight: image-video joint training. Each step also denoises the batch's first
        latent frames alone, as one-frame clips (with a causal VAE the first latent frame is the
        image latent of the first video frame), with their own caption dropout, times and noise;
        the step's loss is `video loss + image_loss_weight * image loss`. A one-frame clip cannot
        read an object's appearance off other frames, so it must take it from the caption. 0: off.
    word_loss_weight: weight of `vidiff.models.text.WordRecoveryHead`'s loss (each caption word
        told back from its own encoder output by a cosine classifier), added to the video loss, so
        that the jointly trained text encoder cannot map two words the denoiser does not use yet to
        the same output. Needs the built-in encoder with model.text.train. 0: off.
    foreground_weight: the video loss weighs latent positions that stand out of their clip (the
        objects) up to 1 + foreground_weight times the background (`vidiff.diffusion.
        foreground_weights`), so that the few positions where shape is drawn are not outweighed by
        the many easy background ones. 0: off.
    sampler, sampling_steps, sampling_shift, guidance_scale, sampling_context_noise: the exported
        SchedulerConfig (the last is its `context_noise`, the level at which long videos show a
        window its held frames from earlier windows; at most `context_noise`, the trained range).
    """

    schedule: Literal["flow", "linear", "scaled_linear", "cosine"] = "flow"
    prediction_type: Literal["eps", "x0", "v", "flow"] = "flow"
    num_train_steps: int = 1000
    zero_terminal_snr: bool = False
    timesteps: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    high_noise_prob: float = 0.0
    high_noise_from: float = 0.95
    independent_frame_prob: float = 0.0
    caption_dropout: float = 0.1
    i2v_prob: float = 0.25
    continuation_prob: float = 0.0
    max_context_frames: int = 2
    interpolation_prob: float = 0.0
    midclip_prob: float = 0.0
    context_noise: float = 0.0
    image_loss_weight: float = 0.0
    word_loss_weight: float = 0.0
    foreground_weight: float = 0.0
    sampler: Literal["euler", "heun", "unipc", "dpmpp_2m", "ddim", "ddpm"] = "euler"
    sampling_steps: int = 24
    sampling_shift: float = 1.0
    guidance_scale: float = 4.0
    sampling_context_noise: float = 0.0

    #: The exported sampling defaults: not part of what is trained (see `tasks.export_run`).
    SAMPLING_FIELDS = ("sampler", "sampling_steps", "sampling_shift", "guidance_scale", "sampling_context_noise")

    def __post_init__(self) -> None:
        if self.schedule != "flow" and self.prediction_type == "flow":
            raise ValueError(f"diffusion.prediction_type='flow' needs diffusion.schedule='flow', got {self.schedule!r}")
        for name in ("high_noise_prob", "independent_frame_prob", "caption_dropout", "i2v_prob", "continuation_prob", "interpolation_prob",
                     "midclip_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"diffusion.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("image_loss_weight", "word_loss_weight", "foreground_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"diffusion.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.high_noise_from < 1.0:
            raise ValueError(f"diffusion.high_noise_from must be in [0, 1), got {self.high_noise_from}")
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"diffusion.context_noise must be in [0, 1), got {self.context_noise}")
        if not 0.0 <= self.sampling_context_noise <= self.context_noise:
            raise ValueError(f"diffusion.sampling_context_noise must be in [0, context_noise = {self.context_noise}] "
                             f"(the model reads a noisy context only at levels it was trained on), "
                             f"got {self.sampling_context_noise}")
        held = self.i2v_prob + self.continuation_prob + self.interpolation_prob
        if held > 1.0 + 1e-9:
            raise ValueError(f"diffusion.i2v_prob + continuation_prob + interpolation_prob must be <= 1, got {held:g}")
        if self.max_context_frames < 1:
            raise ValueError(f"diffusion.max_context_frames must be >= 1, got {self.max_context_frames}")
        if self.shift <= 0 or self.sampling_shift <= 0:
            raise ValueError(f"diffusion.shift and sampling_shift must be > 0, got {self.shift}, {self.sampling_shift}")
        if self.logit_std <= 0:
            raise ValueError(f"diffusion.logit_std must be > 0, got {self.logit_std}")
        if self.sampling_steps < 1:
            raise ValueError(f"diffusion.sampling_steps must be >= 1, got {self.sampling_steps}")


@dataclass
class ValidationSection:
    """`[validation]` (every `train.validate_every` steps, from the EMA weights).

    Diffusion: one video per (prompt, seed) plus image-to-video samples from the first frames
    of the world scenes `i2v_seeds`, `steps` sampling steps at `guidance_scale`; written as mp4s
    and a contact sheet under <out_dir>/samples/step-XXXXXXXX/, and a fixed-noise loss over
    `loss_clips` cached clips. VAE: reconstructions of `clips` fixed world clips, with PSNR.
    """

    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    seeds: list[int] = field(default_factory=lambda: [0])
    i2v_seeds: list[int] = field(default_factory=lambda: [1000001])
    steps: int = 16
    guidance_scale: float = 4.0
    clips: int = 4
    loss_clips: int = 16

    def __post_init__(self) -> None:
        if self.steps < 1 or self.clips < 0 or self.loss_clips < 0:
            raise ValueError("validation.steps must be >= 1 and validation.clips / loss_clips >= 0")


@dataclass
class RunConfig:
    """A whole training recipe (see the module docstring)."""

    task: Literal["vae", "diffusion"] = "diffusion"
    out_dir: str = ""
    export_dir: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    vae: VAESection = field(default_factory=VAESection)
    data: DataSection = field(default_factory=DataSection)
    diffusion: DiffusionSection = field(default_factory=DiffusionSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationSection = field(default_factory=ValidationSection)

    def __post_init__(self) -> None:
        if self.task == "diffusion" and not self.vae.path:
            raise ValueError("a diffusion run needs vae.path (the folder of a trained VAE, e.g. a VAE run's export)")
        factor = self.vae.vae_config().temporal_factor
        if self.task == "vae" and (self.data.frames - 1) % factor:
            raise ValueError(f"data.frames={self.data.frames} is not 1 + {factor}k as the VAE's temporal factor needs")


def load_recipe(path: str | Path | None, overrides: Iterable[str] = ()) -> RunConfig:
    """Read a recipe TOML (optional) plus `key.sub=value` overrides into a validated RunConfig.

    Raises ConfigError naming the dotted key and file for unknown keys and invalid values.
    """
    cfg = load_config(RunConfig, path, overrides)
    if not cfg.out_dir:
        if path is None:
            raise ConfigError("out_dir is not set (give it in the recipe or as out_dir=DIR)")
        cfg.out_dir = str(Path("runs") / Path(path).stem)
    return cfg


def recipe_to_dict(cfg: RunConfig) -> dict:
    """The recipe as plain JSON data (stored in every checkpoint's config.json)."""
    return config_to_dict(cfg)

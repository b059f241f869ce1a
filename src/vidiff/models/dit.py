"""VideoDiT: a diffusion transformer over 3D latent patches (Wan 2.1's architecture, generalised).

    model(x_t [B, C, F, H, W], t [B] or [B, F] in [0, 1], cond: Conditioning) -> [B, C_out, F, H, W]

Pipeline of one forward:
  1. Input: with `image_condition="concat"` the model appends `mask_channels` copies of
     `cond.frame_mask` (1 where a latent frame is given) and `cond.image_latent` (zeros where
     absent) to x_t: [x_t, mask, image_latent], Wan I2V's channel order. With "preconcat" the
     caller passes all `in_channels` already concatenated (Wan parity); with "none" x_t alone.
  2. Conv3d patch embedding (kernel = stride = patch_size), tokens in (f, h, w) raster order.
  3. Time: temb = MLP(sinusoid(timestep_scale * t)) (+ scalar-condition embedding), one per sample
     or one per token frame; block modulation = Linear(SiLU(temb)) split into n rows of width dim.
     Per-frame t [B, F] is read per *token frame*: with a temporal patch pt > 1, the tokens of
     frames [j*pt, (j+1)*pt) use the t of frame j*pt (the first frame of their patch).
  4. Text tokens -> Linear-GELU(tanh)-Linear; CLIP image tokens (when `image_dim` is set) ->
     LN-Linear-GELU-Linear-LN.
  5. Blocks (below), then the head: LN(x)(1 + scale) + shift with (shift, scale) = table + temb,
     a Linear to pt*ph*pw*C_out, and unpatchify.

One block ("full", "causal", "spatial"):    modulation rows 0..5 = shift, scale, gate, c_shift, c_scale, c_gate
    x = x + gate   * SelfAttn(LN(x)(1 + scale) + shift)             (q, k RMS-normed, 3D RoPE)
    x = x +          CrossAttn(LN_affine(x), text, image tokens)     (no gate, as Wan)
    x = x + c_gate * FFN(LN(x)(1 + c_scale) + c_shift)              (GELU tanh)
"factorized" inserts a temporal sub-layer after the spatial one, with its own projections and
modulation rows 6..8 (t_shift, t_scale, t_gate):
    x = x + gate   * SpatialAttn(...)     attention among the tokens of one frame
    x = x + t_gate * TemporalAttn(LN(x)(1 + t_scale) + t_shift)     across frames, per position
Its temporal output projection starts at zero, so a fresh factorized block equals a spatial one.

Self-attention modes: "full" joint over all tokens; "causal" block-causal over frames (a token
sees its own frame and earlier ones); "spatial" within a frame only (no temporal mixing anywhere:
the per-frame baseline, whose frames never influence each other); "factorized" as above.
Spatial attention uses the RoPE table of one frame and temporal attention that of one position;
since scores depend only on relative positions, this equals slicing the 3D table.

Causal streaming: in "causal" mode `model(x_t, t, cond, kv_cache=cache)` runs on the latent
frames after the `cache.position` frames already generated, attending to their cached keys and
values (`KVCache`); RoPE positions continue from `cache.position`. With block-causal attention
finished frames never see later ones, so their keys/values are fixed once computed, and this
equals the model on `[cached frames; x_t]` (`vidiff.pipelines.streaming`).

Cross-attention masks padded text keys with `cond.text_mask` (True = real token); a None mask
attends to every token, which reproduces Wan. `cond.text=None` skips cross-attention
(image tokens included): the unconditional branch then sees no text at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vidiff.config import dataclass_from_dict
from vidiff.models.conditioning import Conditioning
from vidiff.nn.adaln import ModulationTable, ada_layer_norm
from vidiff.nn.attention import CrossAttention, LayerKVCache, SelfAttention, block_causal_mask
from vidiff.nn.embeddings import (
    ImageTokenProjection,
    PatchEmbed3D,
    ScalarEmbedding,
    TimestepEmbedding,
    unpatchify,
)
from vidiff.nn.mlp import MLP
from vidiff.nn.norms import LayerNorm
from vidiff.nn.rope import rope_3d, rope_axis_dims

ATTENTION_MODES = ("full", "factorized", "causal", "spatial")
IMAGE_CONDITIONS = ("none", "concat", "preconcat")


@dataclass
class DiTConfig:
    """VideoDiT hyper-parameters. Defaults are Wan 2.1 T2V 1.3B.

    in_channels: channels the patch embedding sees (x_t plus concatenated conditioning, Wan I2V 36)
    out_channels: predicted channels (the latent channels)
    image_condition: "none" | "concat" (model concatenates frame_mask and image_latent, x_t has
        out_channels channels and in_channels = 2 * out_channels + mask_channels) | "preconcat"
        (caller passes in_channels channels)
    mask_channels: copies of the frame mask in the input ("concat" only; Wan uses 4)
    image_dim: width of image-encoder tokens (CLIP, Wan I2V 1280); None = no image tokens
    extra_conditions: names of scalar conditions read from cond.extras (e.g. ("fps", "motion"))
    timestep_scale: the time embedding sees timestep_scale * t (Wan: 1000)
    """

    in_channels: int = 16
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    dim: int = 1536
    num_heads: int = 12
    num_layers: int = 30
    ffn_dim: int = 8960
    text_dim: int = 4096
    freq_dim: int = 256
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    attention: str = "full"
    image_dim: int | None = None
    image_condition: str = "none"
    mask_channels: int = 4
    extra_conditions: tuple[str, ...] = ()
    timestep_scale: float = 1000.0
    rope_theta: float = 10000.0
    gradient_checkpointing: bool = False

    def __post_init__(self):
        self.patch_size = tuple(int(p) for p in self.patch_size)
        self.extra_conditions = tuple(self.extra_conditions)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"DiTConfig.patch_size must be 3 positive ints (pt, ph, pw), got {self.patch_size}")
        for name in ("in_channels", "out_channels", "dim", "num_heads", "num_layers", "ffn_dim", "text_dim", "freq_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (0 if name == "num_layers" else 1):
                raise ValueError(f"DiTConfig.{name} must be a positive int, got {v!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"DiTConfig.dim={self.dim} is not divisible by num_heads={self.num_heads}")
        rope_axis_dims(self.dim // self.num_heads)  # raises on a head width RoPE cannot split
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"DiTConfig.attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        if self.image_condition not in IMAGE_CONDITIONS:
            raise ValueError(f"DiTConfig.image_condition must be one of {IMAGE_CONDITIONS}, got {self.image_condition!r}")
        if self.image_condition == "concat":
            want = 2 * self.out_channels + self.mask_channels
            if self.mask_channels < 1 or self.in_channels != want:
                raise ValueError(
                    f"DiTConfig: image_condition='concat' needs in_channels = 2*out_channels + mask_channels "
                    f"= {want}, got in_channels={self.in_channels} (mask_channels={self.mask_channels})")
        if self.image_dim is not None and self.image_dim < 1:
            raise ValueError(f"DiTConfig.image_dim must be a positive int or None, got {self.image_dim!r}")
        if len(set(self.extra_conditions)) != len(self.extra_conditions):
            raise ValueError(f"DiTConfig.extra_conditions has duplicates: {self.extra_conditions}")
        if not self.eps > 0 or not self.timestep_scale > 0 or not self.rope_theta > 0:
            raise ValueError("DiTConfig: eps, timestep_scale and rope_theta must be > 0")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def num_modulations(self) -> int:
        return 9 if self.attention == "factorized" else 6

    @classmethod
    def from_dict(cls, d: dict) -> "DiTConfig":
        return dataclass_from_dict(cls, d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        d["extra_conditions"] = list(self.extra_conditions)
        return d


@dataclass
class KVCache:
    """What a causal VideoDiT keeps of the latent frames already generated: each block's
    `LayerKVCache`, and `position`, the token frames so far (the RoPE offset of the next ones).

    `model(x_t, t, cond, kv_cache=cache)` attends to the cache and changes none of it;
    `cache.append(frames)` then adds that forward's keys/values (run it on finished frames, at
    t = 0) and advances `position` by `frames` token frames.

        cache = KVCache.for_model(model)
        model(clean_chunk, torch.zeros(b), cond, kv_cache=cache); cache.append(frames=chunk_frames)
        prediction = model(x_t, t, cond, kv_cache=cache)   # the next chunk
    """

    layers: list[LayerKVCache] = field(default_factory=list)
    position: int = 0

    @classmethod
    def for_model(cls, model: "VideoDiT") -> "KVCache":
        """An empty cache with one layer per block of `model`."""
        return cls([LayerKVCache() for _ in model.blocks])

    @property
    def cached_tokens(self) -> int:
        return self.layers[0].length if self.layers else 0

    def append(self, frames: int) -> None:
        """Add the last forward's keys/values; they were `frames` token frames."""
        for layer in self.layers:
            layer.append()
        self.position += frames

    def discard(self) -> None:
        """Drop the last forward's keys/values (a prediction for frames not yet final)."""
        for layer in self.layers:
            layer.new = None

    def keep_last(self, tokens: int) -> None:
        """Evict all but the last `tokens` cached tokens of every layer (`position` keeps counting)."""
        for layer in self.layers:
            layer.keep_last(tokens)


class DiTBlock(nn.Module):
    """One transformer block; see the module docstring for the layout of each attention mode."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d, eps = cfg.dim, cfg.eps
        self.mode, self.eps = cfg.attention, eps
        self.modulation = ModulationTable(cfg.num_modulations, d)
        self.self_attn = SelfAttention(d, cfg.num_heads, cfg.qk_norm, eps)
        if self.mode == "factorized":
            self.temporal_attn = SelfAttention(d, cfg.num_heads, cfg.qk_norm, eps)
        # Wan: an affine LayerNorm before cross-attention, or none at all (cross_attn_norm=False)
        self.norm_cross = LayerNorm(d, eps, affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(d, cfg.num_heads, d, cfg.qk_norm, eps, image_kv=cfg.image_dim is not None)
        self.ffn = MLP(d, cfg.ffn_dim, act="gelu_tanh")

    def forward(self, x: Tensor, mod: Tensor, grid: tuple[int, int, int], pos: dict,
                text: Tensor | None = None, text_mask: Tensor | None = None, image: Tensor | None = None,
                kv: LayerKVCache | None = None) -> Tensor:
        """x [B, N, dim]; mod [B, G, n, dim] with G = 1 or frames; pos from VideoDiT.positions;
        kv: cached keys/values of earlier frames (causal mode)."""
        b, n, d = x.shape
        g = mod.shape[1]
        m = self.modulation(mod)

        def adaln(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
            return ada_layer_norm(x.view(b, g, -1, d), shift, scale, self.eps).to(x.dtype).view(b, n, d)

        def residual(x: Tensor, h: Tensor, gate: Tensor) -> Tensor:  # x + gate * h in one pass
            return torch.addcmul(x.view(b, g, -1, d), h.view(b, g, -1, d), gate).to(x.dtype).view(b, n, d)

        f, hh, ww = grid
        if self.mode == "full":
            h = self.self_attn(adaln(x, m[0], m[1]), pos["rope"])
        elif self.mode == "causal":
            h = self.self_attn(adaln(x, m[0], m[1]), pos["rope"], pos["causal_mask"], kv)
        else:  # spatial / factorized: attention within each frame
            h = self.self_attn(adaln(x, m[0], m[1]).view(b * f, hh * ww, d), pos["rope_space"]).view(b, n, d)
        x = residual(x, h, m[2])

        if self.mode == "factorized":
            h = adaln(x, m[6], m[7])
            h = h.view(b, f, hh * ww, d).transpose(1, 2).reshape(b * hh * ww, f, d)
            h = self.temporal_attn(h, pos["rope_time"])
            h = h.view(b, hh * ww, f, d).transpose(1, 2).reshape(b, n, d)
            x = residual(x, h, m[8])

        if text is not None:
            x = x + self.cross_attn(self.norm_cross(x), text, text_mask, image)

        h = self.ffn(adaln(x, m[3], m[4]))
        return residual(x, h, m[5])


class VideoDiT(nn.Module):
    """Video diffusion transformer: `model(x_t, t, cond) -> prediction` (see module docstring).

    Set `model.gradient_checkpointing = True` (or the config flag) to recompute each block in the
    backward pass instead of storing its activations.
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        if isinstance(config, dict):
            config = DiTConfig.from_dict(config)
        self.config = cfg = config
        d = cfg.dim
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.patch_embed = PatchEmbed3D(cfg.in_channels, d, cfg.patch_size)
        self.time_embed = TimestepEmbedding(cfg.freq_dim, d)
        self.time_proj = nn.Linear(d, cfg.num_modulations * d)
        self.extra_embed = ScalarEmbedding(cfg.extra_conditions, cfg.freq_dim, d) if cfg.extra_conditions else None
        self.text_proj = MLP(cfg.text_dim, d, d, act="gelu_tanh")
        self.image_proj = ImageTokenProjection(cfg.image_dim, d) if cfg.image_dim is not None else None
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.head_modulation = ModulationTable(2, d)
        self.proj_out = nn.Linear(d, cfg.out_channels * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform linears and patch conv, zero biases; the output projection and (factorized)
        temporal output projections start at zero, so a fresh model predicts 0 and a fresh
        factorized model behaves as a spatial one."""
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                nn.init.zeros_(mod.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.zeros_(self.proj_out.weight)
        for block in self.blocks:
            if hasattr(block, "temporal_attn"):
                nn.init.zeros_(block.temporal_attn.to_out.weight)
        if self.extra_embed is not None:
            nn.init.zeros_(self.extra_embed.linear_2.weight)

    # -- input assembly ---------------------------------------------------------------------------

    def build_input(self, x_t: Tensor, cond: Conditioning) -> Tensor:
        """x_t -> the patch embedding's input, per `config.image_condition` (module docstring)."""
        cfg = self.config
        if x_t.ndim != 5:
            raise ValueError(f"VideoDiT expects x_t [B, C, F, H, W], got shape {tuple(x_t.shape)}")
        if cfg.image_condition != "concat":
            if x_t.shape[1] != cfg.in_channels:
                raise ValueError(f"VideoDiT: x_t has {x_t.shape[1]} channels, config.in_channels is {cfg.in_channels}")
            return x_t
        b, c, f, h, w = x_t.shape
        if c != cfg.out_channels:
            raise ValueError(f"VideoDiT (image_condition='concat'): x_t has {c} channels, expected {cfg.out_channels}")
        if cond.frame_mask is None:
            mask = x_t.new_zeros(b, cfg.mask_channels, f, h, w)
        else:
            if tuple(cond.frame_mask.shape) != (b, f):
                raise ValueError(f"cond.frame_mask must be [B, F] = [{b}, {f}], got {tuple(cond.frame_mask.shape)}")
            mask = cond.frame_mask.to(x_t.dtype).view(b, 1, f, 1, 1).expand(b, cfg.mask_channels, f, h, w)
        if cond.image_latent is None:
            latent = torch.zeros_like(x_t)
        else:
            if cond.image_latent.shape != x_t.shape:
                raise ValueError(f"cond.image_latent must match x_t's shape {tuple(x_t.shape)}, "
                                 f"got {tuple(cond.image_latent.shape)}")
            latent = cond.image_latent.to(x_t.dtype)
        return torch.cat([x_t, mask, latent], dim=1)

    def frame_times(self, t: Tensor | float, batch: int, frames: int, device=None) -> Tensor:
        """t ([], [B] or per-frame [B, F]) -> [B, G] times, G = 1 or token frames (first frame of each patch)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim == 1:
            if t.shape[0] != batch:
                raise ValueError(f"timestep t has shape {tuple(t.shape)}, expected [{batch}] or [{batch}, {frames}]")
            return t[:, None]
        if t.ndim == 2 and tuple(t.shape) == (batch, frames):
            return t[:, :: self.config.patch_size[0]]
        raise ValueError(f"timestep t has shape {tuple(t.shape)}, expected [{batch}] or [{batch}, {frames}]")

    def positions(self, grid: tuple[int, int, int], device, kv_cache: KVCache | None = None) -> dict:
        """RoPE tables (and the block-causal mask) this config's attention mode needs for `grid`;
        with a `kv_cache`, frame positions start at `kv_cache.position` and the mask lets every
        token see the cached ones."""
        cfg, (f, h, w) = self.config, grid
        hd, theta = cfg.head_dim, cfg.rope_theta
        if cfg.attention in ("full", "causal"):
            offset = (kv_cache.position if kv_cache is not None else 0, 0, 0)
            pos = {"rope": rope_3d(grid, hd, theta, offset=offset, device=device)}
            if cfg.attention == "causal":
                mask = block_causal_mask(f, h * w, device=device)
                if kv_cache is not None and kv_cache.cached_tokens:
                    mask = torch.cat([mask.new_ones(f * h * w, kv_cache.cached_tokens), mask], dim=1)
                pos["causal_mask"] = mask
            return pos
        pos = {"rope_space": rope_3d((1, h, w), hd, theta, device=device)}
        if cfg.attention == "factorized":
            pos["rope_time"] = rope_3d((f, 1, 1), hd, theta, device=device)
        return pos

    # -- forward ----------------------------------------------------------------------------------

    def forward(self, x_t: Tensor, t: Tensor, cond: Conditioning | None = None, *,
                kv_cache: KVCache | None = None) -> Tensor:
        cfg = self.config
        if kv_cache is not None and (cfg.attention != "causal" or len(kv_cache.layers) != len(self.blocks)):
            raise ValueError(f"kv_cache needs attention='causal' (got {cfg.attention!r}) and one layer per block "
                             f"({len(self.blocks)}, got {len(kv_cache.layers)}); make it with KVCache.for_model")
        cond = Conditioning() if cond is None else cond
        x = self.build_input(x_t, cond)
        b, _, f, _, _ = x.shape
        tokens, grid = self.patch_embed(x)

        times = self.frame_times(t, b, f, device=x.device)  # [B, G]
        temb = self.time_embed(cfg.timestep_scale * times)  # [B, G, dim]
        if self.extra_embed is not None:
            temb = temb + self.extra_embed(cond.extras, b)[:, None, :]
        mod = self.time_proj(F.silu(temb)).unflatten(-1, (cfg.num_modulations, cfg.dim))

        text = text_mask = image = None
        if cond.text is not None:
            if cond.text.ndim != 3 or cond.text.shape[0] != b or cond.text.shape[2] != cfg.text_dim:
                raise ValueError(f"cond.text must be [{b}, L, {cfg.text_dim}], got {tuple(cond.text.shape)}")
            text = self.text_proj(cond.text.to(tokens.dtype))
            if cond.text_mask is not None:
                if tuple(cond.text_mask.shape) != tuple(cond.text.shape[:2]):
                    raise ValueError(f"cond.text_mask must be [B, L] = {tuple(cond.text.shape[:2])}, "
                                     f"got {tuple(cond.text_mask.shape)}")
                text_mask = cond.text_mask.bool()
        if cond.image_tokens is not None and text is not None:
            if self.image_proj is None:
                raise ValueError("cond.image_tokens given but the config has no image_dim")
            image = self.image_proj(cond.image_tokens.to(tokens.dtype))

        pos = self.positions(grid, x.device, kv_cache)
        h = tokens
        for i, block in enumerate(self.blocks):
            kv = kv_cache.layers[i] if kv_cache is not None else None
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = checkpoint(block, h, mod, grid, pos, text, text_mask, image, kv, use_reentrant=False)
            else:
                h = block(h, mod, grid, pos, text, text_mask, image, kv)

        g, n = temb.shape[1], h.shape[1]
        shift, scale = self.head_modulation(temb.unsqueeze(-2).expand(b, g, 2, cfg.dim))
        h = ada_layer_norm(h.view(b, g, -1, cfg.dim), shift, scale, cfg.eps).to(h.dtype).view(b, n, cfg.dim)
        return unpatchify(self.proj_out(h), grid, cfg.patch_size, cfg.out_channels)

"""Neural-network building blocks shared by vidiff's models (DiT, UNet, VAE).

attention  SDPA attention, SelfAttention / CrossAttention modules, block-causal and key-padding masks
rope       3D rotary position embedding (Wan's head-dim split)
adaln      AdaLN modulation (`modulate`, fused `ada_layer_norm`, per-block `ModulationTable`)
norms      float32-statistics LayerNorm and RMSNorm
embeddings timestep sinusoid + MLP, scalar conditions, 3D patch embed / unpatchify, image tokens
mlp        two-layer perceptron (activation recomputed in backward to save memory)
"""

from .adaln import ModulationTable, ada_layer_norm, modulate
from .attention import CrossAttention, SelfAttention, block_causal_mask, dot_product_attention, key_padding_mask
from .embeddings import (
    ImageTokenProjection,
    PatchEmbed3D,
    ScalarEmbedding,
    TimestepEmbedding,
    timestep_sinusoid,
    unpatchify,
)
from .mlp import MLP
from .norms import LayerNorm, RMSNorm
from .rope import apply_rope, rope_3d, rope_angles_1d, rope_axis_dims

__all__ = [
    "ModulationTable", "ada_layer_norm", "modulate", "CrossAttention", "SelfAttention", "dot_product_attention", "block_causal_mask",
    "key_padding_mask", "ImageTokenProjection", "PatchEmbed3D", "ScalarEmbedding", "TimestepEmbedding",
    "timestep_sinusoid", "unpatchify", "MLP", "LayerNorm", "RMSNorm", "apply_rope", "rope_3d",
    "rope_angles_1d", "rope_axis_dims",
]

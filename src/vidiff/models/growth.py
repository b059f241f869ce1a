"""Depth growth of a trained VideoDiT: more blocks, the same function at the start.

Block expansion (as in LLaMA Pro, Wu et al. 2024): a model of L blocks becomes one of k*L blocks,
each old block followed by k - 1 copies of itself whose residual branches end in a zeroed output
projection. A block computes

    x = x + gate * SelfAttn(...)  ->  SelfAttn ends in to_out, so with to_out = 0 the branch adds 0
    x = x + CrossAttn(...)        ->  to_out = 0: adds 0
    x = x + c_gate * FFN(...)     ->  FFN ends in fc2, so fc2 = 0: adds 0

(and "factorized"'s temporal branch, whose to_out is zeroed too), so every copy is the identity
and the grown model equals the source exactly. Training then moves the zeroed projections first
(their gradient is the branch input times the upstream gradient, not zero) and the rest of each
copy with them; the copies start from their source block's attention and FFN weights rather than
from random ones.
"""

from __future__ import annotations

import copy

import torch

from vidiff.models.dit import DiTBlock, DiTConfig, VideoDiT


def zero_residual_branches(block: DiTBlock) -> DiTBlock:
    """Zero the output projections that end each residual branch of `block` (in place), making it
    the identity map x -> x for any input and conditioning. Returns the block."""
    outs = [block.self_attn.to_out, block.cross_attn.to_out, block.ffn.fc2]
    if hasattr(block, "temporal_attn"):
        outs.append(block.temporal_attn.to_out)
    with torch.no_grad():
        for linear in outs:
            linear.weight.zero_()
            linear.bias.zero_()
    return block


def expand_depth(source: VideoDiT, num_layers: int) -> VideoDiT:
    """A VideoDiT with `num_layers` blocks (a multiple k of the source's) that computes exactly
    what `source` computes: block i of the source becomes block k*i, followed by k - 1 identity
    copies of it (`zero_residual_branches`). Every other weight is copied. The source is untouched.

    Example: `expand_depth(load_denoiser("src/vidiff/assets/world-dit/transformer"), 12)` (with
    `vidiff.pipelines.pipeline.load_denoiser`) doubles the shipped 6-block world model; in a
    recipe, `model.init=... model.init_expand_depth=true model.dit.num_layers=12` does the same.
    """
    old = source.config.num_layers
    if old < 1 or num_layers < old or num_layers % old:
        raise ValueError(f"expand_depth: num_layers={num_layers} must be a multiple of the source's "
                         f"{old} blocks (and at least as many)")
    k = num_layers // old
    grown = copy.deepcopy(source)
    grown.config = DiTConfig.from_dict({**source.config.to_dict(), "num_layers": num_layers})
    blocks = []
    for block in grown.blocks:
        blocks.append(block)
        blocks.extend(zero_residual_branches(copy.deepcopy(block)) for _ in range(k - 1))
    grown.blocks = torch.nn.ModuleList(blocks)
    return grown

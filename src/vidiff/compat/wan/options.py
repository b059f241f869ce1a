"""`vidiff generate` options for large (Wan 2.1) models: --dtype and --offload.

Kept free of torch imports so that building the CLI parser stays instant. `generate.py` calls
`add_wan_arguments(parser)` in `register` and `load_pipeline_with_options(path, args)` (or, for an
already-loaded pipeline, `apply_memory_options(pipe, args)`) in its handler.
"""

from __future__ import annotations

import argparse

DTYPE_CHOICES = ("fp32", "bf16", "fp16")
OFFLOAD_CHOICES = ("none", "model", "blocks")


def add_wan_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --dtype and --offload (defaults: fp32 weights, no offload)."""
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default=None,
                        help="weight dtype of the transformer and text/image encoders; bf16 keeps the modules Wan "
                             "keeps in fp32, the VAE and the latents stay fp32 (default: fp32)")
    parser.add_argument("--offload", choices=OFFLOAD_CHOICES, default="none",
                        help="model: each component on the device only while it runs; blocks: also stream the "
                             "transformer's blocks from CPU one at a time and run the text encoder on the CPU "
                             "(lowest GPU memory) (default: none)")


def load_pipeline_with_options(path: str, args: argparse.Namespace):
    """Load a pipeline folder honouring --device, --dtype and --offload.

    Wan folders load on CPU in the requested dtype first (so a bf16 model never exists in fp32
    on the GPU), then go to the device whole or with offload hooks. vidiff's own pipelines
    support --device only (and refuse --dtype / --offload with a clear message).
    """
    from vidiff.compat.wan import is_wan_directory, load_wan_pipeline
    from vidiff.pipelines import VideoPipeline

    device = getattr(args, "device", "cpu")
    dtype, offload = getattr(args, "dtype", None), getattr(args, "offload", "none") or "none"
    if is_wan_directory(path):
        return load_wan_pipeline(path, device=device, dtype=dtype, offload=offload)
    if dtype not in (None, "fp32") or offload != "none":
        raise ValueError(f"{path}: --dtype and --offload apply to Wan 2.1 models only")
    return VideoPipeline.from_pretrained(path, device=device)


def apply_memory_options(pipe, args: argparse.Namespace):
    """Apply --dtype / --offload / --device to a loaded `WanVideoPipeline` (returns it)."""
    from vidiff.compat.wan.pipeline import WanVideoPipeline

    dtype, offload = getattr(args, "dtype", None), getattr(args, "offload", "none") or "none"
    device = getattr(args, "device", "cpu")
    if not isinstance(pipe, WanVideoPipeline):
        if dtype not in (None, "fp32") or offload != "none":
            raise ValueError("--dtype and --offload apply to Wan 2.1 models only")
        return pipe.to(device)
    pipe.to("cpu")
    if dtype not in (None, "fp32"):
        pipe.set_dtype(dtype)
    return pipe.enable_offload(offload, device)

"""Whole Wan 2.1 pipelines end to end: vidiff vs diffusers, in one process.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_wan.py   (about 2 minutes on 1 core)

Two random-weight Wan T2V pipelines (diffusers' WanPipeline layout: UMT5 + WanTransformer3DModel +
AutoencoderKLWan + flow UniPC) are built and saved to a temp folder; diffusers'
`WanPipeline.from_pretrained` and vidiff's `VideoPipeline.from_pretrained` load the same folder
and generate the same video (same seed, steps, guidance, 512-token prompts; the frames'
largest difference is reported). Runs alternate between the implementations; medians are
reported, for the whole generation and for text encoding + sampling alone (output_type="latent").
The whole generation's peak is also measured in isolation: a fresh process per implementation
and repeat loads only that implementation, warms up once and measures one generation (median of 3),
so neither implementation's allocator state affects the other's.

  tiny: the test suite's size (dim 24, 2 layers, 9 frames at 32x32)
  mid:  dim 384 (6 x 64), 6 layers, ffn 1536, UMT5 d_model 128, VAE base 32; 17 frames at 128x128

Time: process CPU time of one generation (one intra-op thread, so CPU time is compute time on a
shared machine) and wall time. Memory: the extra resident memory one generation needs, measured
in this process: after gc and malloc_trim, the kernel's peak-RSS mark is reset
(/proc/self/clear_refs <- 5), the generation runs, and VmHWM minus the VmRSS before is reported.
glibc's mmap threshold is fixed at 128 KiB (mallopt) so that freed tensors leave RSS at once;
without it the dynamic threshold makes peaks vary by +-20% from run to run.
With --device cuda, torch.cuda.max_memory_allocated is reported instead.
Writes benchmarks/results/wan.json.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from _memory import reset_peak_rss, status_kb

from vidiff.machine import machine_info

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "wan.json")
PROMPT = "a red circle moves left across a snowy field"
NEGATIVE = "blurry, static"

SIZES = {
    "tiny": dict(dim_head=(2, 12), layers=2, ffn=48, d_model=32, base_dim=8, z=4,
                 run=dict(num_frames=9, height=32, width=32, num_inference_steps=3), repeats=7),
    "mid": dict(dim_head=(6, 64), layers=6, ffn=1536, d_model=128, base_dim=32, z=16,
                run=dict(num_frames=17, height=128, width=128, num_inference_steps=4), repeats=3),
}


def tokenizer():
    from vidiff.testing import offline_t5_tokenizer

    return offline_t5_tokenizer([PROMPT, NEGATIVE, "a cat plays piano in the snow", "waves on a beach at sunset"] * 20)


def build(root: str, size: dict) -> None:
    import diffusers
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tok = tokenizer()
    d = size["d_model"]
    text = UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=d, d_kv=d // 4, d_ff=2 * d, num_layers=2,
                                       num_heads=4, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                       decoder_start_token_id=0))
    z = size["z"]
    vae = diffusers.AutoencoderKLWan(base_dim=size["base_dim"], z_dim=z, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                     temperal_downsample=[False, True, True], latents_mean=[0.1 * i for i in range(z)],
                                     latents_std=[1 + 0.1 * i for i in range(z)])
    heads, head_dim = size["dim_head"]
    transformer = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=z, out_channels=z,
        text_dim=d, freq_dim=32 if heads * head_dim < 64 else 256, ffn_dim=size["ffn"], num_layers=size["layers"])
    with torch.no_grad():
        for m in (vae, transformer):
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
    scheduler = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                  flow_shift=3.0)
    diffusers.WanPipeline(tokenizer=tok, text_encoder=text.eval(), vae=vae.eval(), scheduler=scheduler,
                          transformer=transformer.eval()).save_pretrained(root)


def _quiesce() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measure(fn, device: str) -> dict:
    """One call of fn: CPU seconds, wall seconds, extra peak memory in bytes."""
    _quiesce()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        base = status_kb("VmRSS") * 1024
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    c1, w1 = time.process_time(), time.perf_counter()
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else status_kb("VmHWM") * 1024) - base
    return {"cpu_s": c1 - c0, "wall_s": w1 - w0, "peak_bytes": peak, "out": out}


def load(impl: str, root: str, device: str):
    """The saved Wan pipeline in `root`, loaded by diffusers or by vidiff."""
    if impl == "diffusers":
        import diffusers

        pipe = diffusers.WanPipeline.from_pretrained(root).to(device)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    from vidiff.pipelines import VideoPipeline

    return VideoPipeline.from_pretrained(root, device=device)


def generation(impl: str, pipe, run: dict, sampling_only: bool = False):
    """A call of `pipe` on the benchmark prompt: decoded frames, or with `sampling_only` text
    encoding + sampling alone (latents, no decoding)."""
    if impl == "diffusers":
        output = "latent" if sampling_only else "np"

        def fn():
            out = pipe(PROMPT, negative_prompt=NEGATIVE, generator=torch.Generator().manual_seed(0),
                       output_type=output, **run).frames
            return out if sampling_only else out[0]
    else:
        output = "latent" if sampling_only else "float"

        def fn():
            out = pipe(PROMPT, negative_prompt=NEGATIVE, seed=0, output_type=output, progress=False, **run)
            return out.latents if sampling_only else out.frames
    return fn


def bench_size(name: str, size: dict, device: str) -> dict:
    with tempfile.TemporaryDirectory() as root:
        build(root, size)
        ref, ours = load("diffusers", root, device), load("vidiff", root, device)
        isolated = {impl: isolated_peak(root, name, impl, device) for impl in ("diffusers", "vidiff")}
    run = dict(size["run"], guidance_scale=5.0)
    runs = {"diffusers": generation("diffusers", ref, run), "vidiff": generation("vidiff", ours, run),
            "diffusers_sampling": generation("diffusers", ref, run, sampling_only=True),
            "vidiff_sampling": generation("vidiff", ours, run, sampling_only=True)}
    with torch.no_grad():
        for fn in runs.values():  # warm-up (lazy inits, allocator)
            fn()
        rows = {name: [] for name in runs}
        for _ in range(size["repeats"]):
            for impl, fn in runs.items():
                rows[impl].append(measure(fn, device))
    max_err = float(np.abs(rows["vidiff"][0]["out"] - rows["diffusers"][0]["out"]).max())
    result = {"config": {k: v for k, v in size.items() if k != "repeats"}, "repeats": size["repeats"],
              "max_abs_diff_frames": max_err}
    for impl, rs in rows.items():
        result[impl] = {key: statistics.median(r[key] for r in rs) for key in ("cpu_s", "wall_s", "peak_bytes")}
    d, v = result["diffusers_sampling"], result["vidiff_sampling"]
    result["sampling_speedup_cpu"] = d["cpu_s"] / v["cpu_s"]
    result["sampling_peak_ratio_vidiff_over_diffusers"] = v["peak_bytes"] / max(d["peak_bytes"], 1)
    d, v = result["diffusers"], result["vidiff"]
    result["speedup_cpu"] = d["cpu_s"] / v["cpu_s"]
    result["speedup_wall"] = d["wall_s"] / v["wall_s"]
    result["peak_ratio_vidiff_over_diffusers"] = v["peak_bytes"] / max(d["peak_bytes"], 1)
    result["isolated_peak_bytes"] = isolated
    result["isolated_peak_ratio_vidiff_over_diffusers"] = isolated["vidiff"] / max(isolated["diffusers"], 1)
    return result


ISOLATED_REPEATS = 3


def isolated_peak(root: str, name: str, impl: str, device: str) -> float:
    """Median peak growth of one whole generation, each measured in a fresh process that loads only
    `impl` (so neither implementation's allocator state or imports affect the other's)."""
    import subprocess

    vals = []
    for _ in range(ISOLATED_REPEATS):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", impl, root, name, "--device", device],
                             capture_output=True, text=True, check=True)
        vals.append(int(out.stdout.strip().splitlines()[-1]))
    return statistics.median(vals)


def measure_one(impl: str, root: str, name: str, device: str) -> int:
    """In a fresh process: load `impl` from `root`, warm up once, then the peak growth of one run."""
    fn = generation(impl, load(impl, root, device), dict(SIZES[name]["run"], guidance_scale=5.0))
    with torch.no_grad():
        fn()
        return int(measure(fn, device)["peak_bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--one", nargs=3, metavar=("IMPL", "ROOT", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:  # fixed mmap threshold: big tensors are mmapped and unmapped on free, so RSS follows live memory
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except OSError:
        pass
    if args.one:
        print(measure_one(*args.one, args.device))
        return
    import diffusers
    import transformers

    out = {"machine": machine_info(args.device, diffusers=diffusers.__version__,
                                   transformers=transformers.__version__), "sizes": {}}
    print(f"{'size':6} {'impl (whole run / sampling only)':18} {'cpu s':>8} {'wall s':>8} {'peak MB':>9}")
    for name in args.sizes:
        r = bench_size(name, SIZES[name], args.device)
        out["sizes"][name] = r
        for impl in ("diffusers", "vidiff", "diffusers_sampling", "vidiff_sampling"):
            m = r[impl]
            print(f"{name:6} {impl:18} {m['cpu_s']:8.3f} {m['wall_s']:8.3f} {m['peak_bytes'] / 2**20:9.1f}")
        print(f"{name:6} speedup (cpu) {r['speedup_cpu']:.2f}x, peak ratio vidiff/diffusers "
              f"{r['peak_ratio_vidiff_over_diffusers']:.2f}, max |frames diff| {r['max_abs_diff_frames']:.1e}")
        iso = r["isolated_peak_bytes"]
        print(f"{name:6} isolated processes: peak MB diffusers {iso['diffusers'] / 2**20:.1f}, vidiff "
              f"{iso['vidiff'] / 2**20:.1f}, ratio {r['isolated_peak_ratio_vidiff_over_diffusers']:.2f}")
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    from vidiff.modelio import write_json

    write_json(RESULTS, out)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

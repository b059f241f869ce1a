"""VideoDiT vs diffusers' WanTransformer3DModel, and factorized vs full attention cost.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dit.py   (about 2-3 minutes on 1 core)

1. Speed: both models at the same small-but-real config with the same weights (converted), in the
   same process, timed alternately; median of several runs, forward (no grad) and forward+backward.
2. Peak memory: fresh subprocesses per (implementation, pass), median of MEMORY_REPEATS. Each builds its model and inputs,
   records its current RSS (/proc/self/status VmRSS), resets the kernel's peak-RSS mark
   (/proc/self/clear_refs), runs the pass once, and reports the new peak (VmHWM) minus that
   baseline: the extra resident memory the pass needed, allocator behaviour included.
   (tracemalloc cannot see torch's allocations; ru_maxrss is inherited across fork/exec.)
   Peak RSS depends on the allocator's reuse and is noisy by a few MB; the exact companion number
   is the activation memory autograd saves for backward (saved_tensors_hooks, unique storages).
3. Scaling: VideoDiT forward time, attention="full" vs "factorized", as latent frames grow.
Times are medians of process CPU time (one intra-op thread, so CPU time is compute time; the
machine may be shared, which inflates wall time) and, for reference, wall time.
Writes benchmarks/results/dit.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import torch
from _memory import reset_peak_rss, status_kb

from vidiff.machine import machine_info

WAN_CFG = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=64, in_channels=16, out_channels=16,
               text_dim=512, freq_dim=256, ffn_dim=1024, num_layers=4)
LATENT = (1, 16, 6, 32, 32)  # -> 6 x 16 x 16 = 1536 tokens
TEXT = (1, 64, 512)
RUNS = 9
RUNS_BACKWARD = 5
MEMORY_REPEATS = 3  # fresh subprocesses per (implementation, pass); the median is reported
SCALING_FRAMES = (16, 32, 64, 128)
SCALING_SPATIAL = 12  # latent 12x12 -> 36 tokens per frame
SCALING_LAYERS = 2
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "dit.json")


def build(impl: str, cfg: dict = WAN_CFG, attention: str = "full", weights_from=None):
    if impl == "diffusers":
        from diffusers import WanTransformer3DModel

        torch.manual_seed(0)
        return WanTransformer3DModel(**cfg).eval()
    from vidiff.compat.wan.transformer import convert_wan_transformer_state_dict, dit_config_from_wan
    from vidiff.models.dit import VideoDiT

    config = dit_config_from_wan(cfg, attention=attention)
    torch.manual_seed(0)
    model = VideoDiT(config).eval()
    if weights_from is not None:
        model.load_state_dict(convert_wan_transformer_state_dict(weights_from.state_dict(), config))
    return model


def make_inputs(latent=LATENT, text=TEXT):
    g = torch.Generator().manual_seed(0)
    return torch.randn(*latent, generator=g), torch.tensor([0.6]), torch.randn(*text, generator=g)


def call(impl: str, model, x, t, text):
    if impl == "diffusers":
        return model(x, t * 1000, text, return_dict=False)[0]
    from vidiff.models.conditioning import Conditioning

    return model(x, t, Conditioning(text=text))


def one_pass(impl, model, x, t, text, backward: bool) -> None:
    if backward:
        model.zero_grad(set_to_none=True)
        call(impl, model, x, t, text).square().mean().backward()
    else:
        with torch.no_grad():
            call(impl, model, x, t, text)


def memory_worker(impl: str, kind: str) -> None:
    torch.set_num_threads(1)
    model = build(impl)
    x, t, text = make_inputs()
    if kind == "forward_backward":
        model.train()
    base = status_kb("VmRSS")
    reset = reset_peak_rss()
    peak_before = status_kb("VmHWM")
    one_pass(impl, model, x, t, text, backward=kind == "forward_backward")
    peak = status_kb("VmHWM")
    print(json.dumps({"delta_mb": (peak - base) / 1024, "peak_reset": reset, "pass_raised_peak": peak > peak_before}))


def measure_memory(impl: str, kind: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory", impl, kind],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def saved_activation_mb(impl: str, model, x, t, text) -> float:
    """Bytes autograd keeps for backward after one training forward (unique storages, parameters
    excluded), via saved_tensors_hooks: exact and independent of the allocator."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        st = tensor.untyped_storage()
        if st.data_ptr() not in params:
            storages[st.data_ptr()] = st.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = call(impl, model, x, t, text)
    del out
    return sum(storages.values()) / 2**20


def time_pair(models: dict, inputs, backward: bool, runs: int) -> dict:
    times = {k: [] for k in models}
    for impl, m in models.items():  # warm-up
        one_pass(impl, m, *inputs, backward)
    for r in range(runs):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for impl in order:
            w, c = time.perf_counter(), time.process_time()
            one_pass(impl, models[impl], *inputs, backward)
            times[impl].append((time.perf_counter() - w, time.process_time() - c))
    return {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v)) for k, v in times.items()}


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    memory = {}  # first, while this process is small (subprocesses are independent anyway)
    for kind in ("forward", "forward_backward"):
        runs = {impl: [] for impl in ("vidiff", "diffusers")}
        for _ in range(MEMORY_REPEATS):
            for impl in runs:
                runs[impl].append(measure_memory(impl, kind))
        v, d = ({"mb": statistics.median(r["delta_mb"] for r in rs), "all": [round(r["delta_mb"], 1) for r in rs],
                 "reset": all(r["peak_reset"] for r in rs)} for rs in runs.values())
        memory[kind] = {"vidiff_mb": v["mb"], "diffusers_mb": d["mb"],
                        "ratio_vidiff_over_diffusers": v["mb"] / d["mb"],
                        "vidiff_runs_mb": v["all"], "diffusers_runs_mb": d["all"],
                        "peak_reset": v["reset"] and d["reset"]}
    wan = build("diffusers")
    vid = build("vidiff", weights_from=wan)
    inputs = make_inputs()
    with torch.no_grad():
        err = (call("diffusers", wan, *inputs) - call("vidiff", vid, *inputs)).abs().max().item()
    models = {"vidiff": vid, "diffusers": wan}
    saved = {impl: saved_activation_mb(impl, m, *inputs) for impl, m in models.items()}
    memory["saved_for_backward"] = {"vidiff_mb": saved["vidiff"], "diffusers_mb": saved["diffusers"],
                                    "ratio_vidiff_over_diffusers": saved["vidiff"] / saved["diffusers"]}
    for m in models.values():
        m.eval()
    speed = {}
    for kind, backward in (("forward", False), ("forward_backward", True)):
        if backward:
            for m in models.values():
                m.train()
        med = time_pair(models, inputs, backward, RUNS_BACKWARD if backward else RUNS)
        (vw, vc), (dw, dc) = med["vidiff"], med["diffusers"]
        speed[kind] = {"vidiff_cpu_s": vc, "diffusers_cpu_s": dc, "ratio_cpu_vidiff_over_diffusers": vc / dc,
                       "vidiff_wall_s": vw, "diffusers_wall_s": dw, "ratio_wall_vidiff_over_diffusers": vw / dw}
    del wan, vid, models

    scaling = []
    cfg = dict(WAN_CFG, num_layers=SCALING_LAYERS)
    for frames in SCALING_FRAMES:
        latent = (1, 16, frames, SCALING_SPATIAL, SCALING_SPATIAL)
        row = {"latent_frames": frames, "tokens": frames * (SCALING_SPATIAL // 2) ** 2}
        for mode in ("full", "factorized"):
            m = build("vidiff", cfg, attention=mode)
            row[f"{mode}_s"] = time_pair({"vidiff": m}, make_inputs(latent), False, 3)["vidiff"][1]
        row["full_over_factorized"] = row["full_s"] / row["factorized_s"]
        scaling.append(row)

    n_tokens = LATENT[2] * (LATENT[3] // 2) * (LATENT[4] // 2)
    print(f"\nVideoDiT vs diffusers WanTransformer3DModel: dim 256, 4 layers, 4 heads, ffn 1024, {n_tokens} tokens; "
          f"max |diff| {err:.2e}")
    print(f"{'measure':<24}{'vidiff':>10}{'diffusers':>11}{'ratio':>8}")
    for kind, r in speed.items():
        for clock in ("cpu", "wall"):
            print(f"{kind + f' ({clock} s)':<24}{r[f'vidiff_{clock}_s']:>10.3f}{r[f'diffusers_{clock}_s']:>11.3f}"
                  f"{r[f'ratio_{clock}_vidiff_over_diffusers']:>8.2f}")
    for kind, r in memory.items():
        label = "saved for bwd (MB)" if kind == "saved_for_backward" else kind + " (peak MB)"
        print(f"{label:<24}{r['vidiff_mb']:>10.1f}{r['diffusers_mb']:>11.1f}{r['ratio_vidiff_over_diffusers']:>8.2f}")
    print(f"\nfull vs factorized attention ({SCALING_LAYERS} layers, latent {SCALING_SPATIAL}x{SCALING_SPATIAL}), forward CPU s")
    print(f"{'frames':>7}{'tokens':>8}{'full':>9}{'factorized':>12}{'full/fact':>11}")
    for r in scaling:
        print(f"{r['latent_frames']:>7}{r['tokens']:>8}{r['full_s']:>9.3f}{r['factorized_s']:>12.3f}{r['full_over_factorized']:>11.2f}")

    result = {
        "machine": machine_info(),
        "config": {"wan": {k: list(v) if isinstance(v, tuple) else v for k, v in WAN_CFG.items()},
                   "latent": list(LATENT), "text": list(TEXT), "tokens": n_tokens, "runs_forward": RUNS,
                   "runs_forward_backward": RUNS_BACKWARD, "dtype": "float32"},
        "max_abs_diff": err,
        "speed": speed,
        "memory": {"method": "fresh subprocess per measurement; VmHWM after one pass (peak reset via clear_refs) minus VmRSS before it",
                   **memory},
        "scaling": {"layers": SCALING_LAYERS, "latent_hw": SCALING_SPATIAL, "runs": 3, "rows": scaling},
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    from vidiff.modelio import write_json

    write_json(RESULTS, result)
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--memory":
        memory_worker(sys.argv[2], sys.argv[3])
    else:
        main()

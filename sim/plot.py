"""Plots (matplotlib, Agg backend: files only, no display): a roofline with measured points overlaid,
and the latency what-if study of docs/sim.md.

Roofline axes: arithmetic intensity = useful FLOP (2 M N K) per DRAM byte the method moves, and
achieved useful FLOP/s.  Roofs: DRAM bandwidth (datasheet, and x the fitted efficiency), the FP16
tensor and CUDA-core peaks, and the LUT roof of our kernel at p bits (one lookup stands for mu
multiply-adds of one plane: 2 mu / p useful FLOP per lookup, 32 lookups per SM per clock).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .gpu import gemv
from .hardware import GPU, get_device
from .kernels import default_kernels
from .validate import Measurement, predict_us

STYLE = {"fp16": ("tab:gray", "o"), "anyprec": ("tab:orange", "^"), "bcq_lut": ("tab:blue", "s"),
         "bcq_dequant": ("tab:brown", "P"), "bcq_fixed": ("tab:green", "D"), "int4": ("tab:purple", "v")}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _intensity(device, m: Measurement) -> tuple[float, float]:
    c = gemv(device, m.method, m.N, m.K, m.M, m.bits)
    return float(c.flops / c.bytes_total), float(c.flops)


def roofline_plot(device, path, measurements=(), model_points=(), title=None):
    """Save a roofline PNG.  ``measurements``: validate.Measurement (filled = measured, hollow =
    predicted, joined by a line); ``model_points``: (method, N, K, M, bits) predicted only (x)."""
    plt = _pyplot()
    gpu = get_device(device)
    if not isinstance(gpu, GPU):
        raise ValueError(f"device: a roofline needs a GPU, got {gpu.name}")
    kc = default_kernels()
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    x = np.logspace(-0.5, 3.5, 200)
    bw = gpu.dram_bandwidth_Bps
    ax.plot(x, np.minimum(x * bw, gpu.fp16_tensor_flops_per_s) / 1e12, "k-", lw=1.2,
            label=f"DRAM {bw / 1e12:.2f} TB/s + FP16 tensor {gpu.fp16_tensor_flops_per_s / 1e12:.0f} TF")
    ax.plot(x, x * bw * kc.cublas_fp16.memory_efficiency / 1e12, "k:", lw=1,
            label=f"x fitted efficiency {kc.cublas_fp16.memory_efficiency:.3f}")
    ax.axhline(gpu.fp16_cuda_flops_per_s / 1e12, color="0.5", ls="--", lw=1,
               label=f"FP16 CUDA cores {gpu.fp16_cuda_flops_per_s / 1e12:.0f} TF")
    mu = kc.bcq_lut.mu
    for p in (2, 4):
        lut_roof = gpu.smem_wavefronts_per_s * 32 * 2 * mu / p
        ax.axhline(lut_roof / 1e12, color="tab:blue", ls="-.", lw=0.8, alpha=0.7)
        ax.text(x[0] * 1.1, lut_roof / 1e12 * 1.08, f"LUT roof, p={p}, mu={mu}", color="tab:blue", fontsize=7)
    seen = set()
    if measurements:
        pred = predict_us(gpu, measurements)
        for m, t_pred in zip(measurements, pred):
            color, marker = STYLE.get(m.method, ("k", "o"))
            xi, flops = _intensity(gpu, m)
            meas_tf, pred_tf = flops / (m.us * 1e-6) / 1e12, flops / (t_pred * 1e-6) / 1e12
            label = f"{m.method} measured ({m.source})" if (m.method, m.source) not in seen else None
            seen.add((m.method, m.source))
            ax.plot([xi, xi], [meas_tf, pred_tf], color=color, lw=0.6, alpha=0.6)
            ax.scatter([xi], [meas_tf], color=color, marker=marker, s=28, label=label, zorder=3)
            ax.scatter([xi], [pred_tf], facecolors="none", edgecolors=color, marker=marker, s=28, zorder=3)
    for method, N, K, M, bits in model_points:
        c = gemv(gpu, method, N, K, M, bits)
        color, _ = STYLE.get(method, ("k", "o"))
        label = f"{method} model" if (method, "model") not in seen else None
        seen.add((method, "model"))
        ax.scatter([float(c.flops / c.bytes_total)], [float(c.achieved_flops_per_s) / 1e12], color=color, marker="x",
                   s=24, label=label, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(0.3, gpu.fp16_tensor_flops_per_s / 1e12 * 2)
    ax.set_xlabel("useful FLOP per DRAM byte (2MNK / bytes moved)")
    ax.set_ylabel("useful TFLOP/s")
    ax.set_title(title or f"{gpu.name}: roofline, measured (filled) vs model (hollow / x)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


WHATIF_VARIANTS = (  # (label, bcq_lut constants set to zero, line style)
    ("model, as measured", (), "-"),
    ("what-if: step latency hidden (deeper load pipeline)", ("step_latency_s",), "--"),
    ("what-if: step + tile latency hidden", ("step_latency_s", "tile_latency_s", "split_epilogue_s"), ":"),
)


def latency_whatif_plot(path, device="H100-SXM", layers=(("8B gate+up", 28672, 4096), ("70B down", 8192, 28672)),
                        bits=(2, 4), batches=(1, 2, 4, 8, 16, 32), measurements=()):
    """Speed-up of our LUT kernel over cuBLAS FP16 against batch: measured points, the fitted
    model, and the model with parts of the kernel's latency chain hidden."""
    import dataclasses
    plt = _pyplot()
    kc = default_kernels()
    M = np.asarray(batches, dtype=np.float64)
    fig, axes = plt.subplots(1, len(layers), figsize=(5.4 * len(layers), 4.2), dpi=120, sharey=True)
    for ax, (name, N, K) in zip(np.atleast_1d(axes), layers):
        base = gemv(device, "fp16", N, K, M).time_s
        for p, color in zip(bits, ("tab:blue", "tab:red", "tab:green")):
            for label, zeroed, ls in WHATIF_VARIANTS:
                variant = dataclasses.replace(kc, bcq_lut=dataclasses.replace(kc.bcq_lut, **{z: 0.0 for z in zeroed}))
                t = gemv(device, "bcq_lut", N, K, M, p, kernels=variant).time_s
                ax.plot(M, base / t, color=color, ls=ls, lw=1.2, label=f"{p}-bit {label}")
            fp = {m.M: m.us for m in measurements if m.method == "fp16" and (m.N, m.K) == (N, K)}
            pts = [(m.M, fp[m.M] / m.us) for m in measurements
                   if m.method == "bcq_lut" and m.bits == p and (m.N, m.K) == (N, K) and m.M in fp]
            if pts:
                ax.scatter(*zip(*pts), color=color, s=22, zorder=3, label=f"{p}-bit measured")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("batch M")
        ax.set_title(f"{get_device(device).name}: {name} ({N} x {K})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("speed-up of bcq_lut over cuBLAS FP16")
    np.atleast_1d(axes)[-1].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)

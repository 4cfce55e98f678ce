"""Where the fitted constants in sim/kernels.toml and sim/hardware.toml come from.

Each fit minimises the squared log-ratio of predicted to measured time (or TOPS/W), so a 10 %
miss costs the same on a 10 us layer and a 300 us one:

    fit_kernel("fp16")        cublas_fp16.{memory_efficiency, fixed_s}, timing.do_bench_extra_cublas_s
                              <- ANCHORS.md cuBLAS rows (do_bench) + gemv_h100.json cublas_fp16 (CUDA graph)
    fit_kernel("anyprec")     anyprec.{instr_per_weight_plane, instr_per_weight_column, fixed_s}
                              <- ANCHORS.md Any-Precision rows
    fit_kernel("bcq_lut")     bcq_lut.{step_latency_s, tile_latency_s, split_epilogue_s, fixed_s}
                              <- benchmarks/results/gemv_h100.json bcq_lut rows
    fit_kernel("bcq_dequant") dequantize.{memory_efficiency, fixed_s} <- gemv_h200.json bcq_dequant_cublas rows
                              (the kernel of gemv_h100.json's rows has been changed five times since)
    fit_kernel("bcq_bmma")    bcq_bmma.{step_latency_s, plane_step_latency_s, fixed_s} <- gemv_h200.json bcq_bmma
    fit_kernel("bcq_imma")    bcq_imma.{step_latency_s, plane_step_latency_s, tile_plane_step_latency_s, fixed_s}
                              <- gemv_h200.json bcq_imma
                              (these three are fitted on the H200: FIT_DEVICE)
    fit_accelerators          datapath_pJ of FIGLUT, FIGNA, iFPU <- FIGLUT paper TOPS/W + trend
    bank_conflict_factor      Monte Carlo, no data

Fits run in that order; each holds the constants of the others at their committed values.

``leave_one_out`` refits without each measurement in turn and predicts it: the out-of-sample
error reported in docs/sim.md.  ``bcq sim --calibrate`` prints every fit as TOML to paste.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import least_squares

from .hardware import get_device
from .kernels import default_kernels
from .validate import accelerator_report, load_accelerator_targets, predict_us


def _exact_kernel_fit(section: str) -> dict:
    """The constants of bcq_bmma / bcq_imma (sim/gpu.py _bcq_exact) that the fit sets, with their bounds."""
    return {(section, "step_latency_s"): (0.3e-6, 0.0, 20e-6, 1e-7),
            (section, "plane_step_latency_s"): (0.1e-6, 0.0, 20e-6, 1e-7),
            (section, "fixed_s"): (3e-6, 0.0, 50e-6, 1e-6)}


# (section, field): (initial, lower, upper, scale)
FITS = {
    "fp16": {("cublas_fp16", "memory_efficiency"): (0.8, 0.3, 1.0, 0.1),
             ("cublas_fp16", "fixed_s"): (5e-6, 0.0, 50e-6, 1e-6),
             ("timing", "do_bench_extra_cublas_s"): (5e-6, 0.0, 50e-6, 1e-6)},
    "anyprec": {("anyprec", "instr_per_weight_plane"): (2.0, 0.0, 20.0, 1.0),
                ("anyprec", "instr_per_weight_column"): (2.0, 0.0, 20.0, 1.0),
                ("anyprec", "fixed_s"): (1e-6, 0.0, 50e-6, 1e-6)},
    "bcq_lut": {("bcq_lut", "step_latency_s"): (1e-6, 0.0, 20e-6, 1e-7),
                ("bcq_lut", "tile_latency_s"): (2e-6, 0.0, 50e-6, 1e-6),
                ("bcq_lut", "split_epilogue_s"): (5e-6, 0.0, 50e-6, 1e-6),
                ("bcq_lut", "fixed_s"): (2e-6, 0.0, 50e-6, 1e-6)},
    "bcq_dequant": {("dequantize", "memory_efficiency"): (0.8, 0.1, 1.0, 0.1),
                    ("dequantize", "fixed_s"): (5e-6, 0.0, 50e-6, 1e-6)},
    "bcq_bmma": _exact_kernel_fit("bcq_bmma"),
    "bcq_imma": {**_exact_kernel_fit("bcq_imma"),
                 ("bcq_imma", "tile_plane_step_latency_s"): (0.05e-6, 0.0, 20e-6, 1e-7)},
}
MIN_ROWS = {"fp16": 4, "anyprec": 4, "bcq_lut": 8, "bcq_dequant": 4, "bcq_bmma": 8, "bcq_imma": 8}
# Where each method was measured (the device its fit runs on); the others are H100 fits.  bcq_dequant's
# H100 rows are of a dequantize kernel since changed five times (precision at compile time, staged stores,
# signs flipped on the FMA pipe, index arithmetic by multiply-high, a thread per row pair).
FIT_DEVICE = {"bcq_bmma": "H200", "bcq_imma": "H200", "bcq_dequant": "H200"}


def fit_device(method: str) -> str:
    return FIT_DEVICE.get(method, "H100-SXM")


def with_params(kernels, values: dict):
    """kernels with {(section, field): value} replaced."""
    by_section: dict = {}
    for (section, name), v in values.items():
        by_section.setdefault(section, {})[name] = v
    return dataclasses.replace(kernels, **{sec: dataclasses.replace(getattr(kernels, sec), **vals)
                                           for sec, vals in by_section.items()})


def fit_kernel(method: str, measurements, device=None, kernels=None) -> dict:
    """Least-squares fit of one method's constants (FITS[method]) to the measurements of that method
    (on ``device``, by default the one it was measured on: fit_device)."""
    kernels = kernels or default_kernels()
    device = device or fit_device(method)
    params = FITS[method]
    ms = [m for m in measurements if m.method == method]
    if len(ms) < MIN_ROWS[method]:
        raise ValueError(f"measurements: need at least {MIN_ROWS[method]} {method} rows to fit, got {len(ms)}")
    if method == "fp16" and len({m.timing for m in ms}) < 2:  # one timing method cannot see the other's extra
        params = {k: v for k, v in params.items() if k[0] != "timing"}
    meas = np.array([m.us for m in ms])
    keys = list(params)

    def residual(x):
        return np.log(predict_us(device, ms, with_params(kernels, dict(zip(keys, x)))) / meas)

    fit = least_squares(residual, [params[k][0] for k in keys], bounds=([params[k][1] for k in keys],
                        [params[k][2] for k in keys]), x_scale=[params[k][3] for k in keys])
    return dict(zip(keys, map(float, fit.x)))


def leave_one_out(method: str, measurements, device=None, kernels=None) -> np.ndarray:
    """Out-of-sample relative error of each measurement of ``method`` (refit without it)."""
    kernels = kernels or default_kernels()
    device = device or fit_device(method)
    ms = [m for m in measurements if m.method == method]
    errs = []
    for i, m in enumerate(ms):
        kc = with_params(kernels, fit_kernel(method, ms[:i] + ms[i + 1:], device, kernels))
        errs.append(float(predict_us(device, [m], kc)[0] / m.us - 1))
    return np.array(errs)


def all_measurements(gpu_results=None, h200_results=None) -> list:
    """The anchors, plus our H100 GPU results of the methods fitted there if the file exists, plus the
    H200 rows of the methods fitted on the H200 (FIT_DEVICE; the H200's other rows stay out of sample)."""
    from .validate import GPU_RESULTS_JSON, H200_RESULTS_JSON, load_anchors, load_gpu_results
    path = GPU_RESULTS_JSON if gpu_results is None else gpu_results
    h200 = H200_RESULTS_JSON if h200_results is None else h200_results
    h100 = [m for m in load_gpu_results(path) if m.method not in FIT_DEVICE] if path.is_file() else []
    extra = [m for m in load_gpu_results(h200) if m.method in FIT_DEVICE] if h200.is_file() else []
    return load_anchors() + h100 + extra


def fit_accelerators(targets: dict | None = None, names=("FIGLUT", "FIGNA", "iFPU")) -> dict[str, float]:
    """datapath_pJ of each design, jointly fitted to the 4-bit TOPS/W table and the FIGLUT/FIGNA trend.

    The table (1.42x at 4-bit) and the paper's text (1.2x) disagree; the fit splits the difference
    in log space, which keeps every target within ~6 % (see docs/sim.md).
    """
    targets = targets or load_accelerator_targets()
    base = {n: get_device(n) for n in names}

    def devices(x):
        return {n: dataclasses.replace(base[n], datapath_pJ=float(v)) for n, v in zip(names, x)}

    def residual(x):
        rep = accelerator_report(targets, devices(x))
        res = [np.log1p(v["err"]) for v in rep["tops_per_W"].values()]
        res += [np.log1p(v["err"]) for v in rep["ratio"].values()]
        return np.array(res)

    fit = least_squares(residual, [base[n].datapath_pJ for n in names], bounds=(0.0, 100.0))
    return dict(zip(names, map(float, fit.x)))


def bank_conflict_factor(entries: int = 256, entry_bytes: int = 2, lanes: int = 32, banks: int = 32,
                         bank_bytes: int = 4, trials: int = 20000, seed: int = 0) -> float:
    """Expected shared-memory wavefronts of one warp-wide lookup with independent uniform keys.

    Lanes reading the same 4-byte word are served together (broadcast); distinct words in the
    same bank serialise.  A table shared by the block (LUT-GEMM) pays this on every lookup.
    """
    rng = np.random.default_rng(seed)
    words = rng.integers(0, entries, size=(trials, lanes)) * entry_bytes // bank_bytes
    bank = words % banks
    worst = np.zeros(trials)
    for b in range(banks):  # distinct words per bank, per trial
        w = np.where(bank == b, words, -1)
        w.sort(axis=1)
        distinct = ((np.diff(w, axis=1) != 0) & (w[:, 1:] >= 0)).sum(axis=1) + (w[:, 0] >= 0)
        worst = np.maximum(worst, distinct)
    return float(worst.mean())


def report(device=None, gpu_results=None) -> str:
    """Every fit as TOML lines (what `bcq sim --calibrate` prints)."""
    from pathlib import Path
    ms = all_measurements(None if gpu_results is None else Path(gpu_results))
    lines = ["# sim/kernels.toml -- fitted to sim/data/anchors_h100.json and benchmarks/results/gemv_h100.json"
             " (bcq_bmma, bcq_imma, bcq_dequant: benchmarks/results/gemv_h200.json, on the H200)"]
    for method in FITS:
        if sum(m.method == method for m in ms) < MIN_ROWS[method]:
            lines.append(f"# {method}: not enough measurements to fit")
            continue
        for (section, name), v in fit_kernel(method, ms, fit_device(method) if device is None else device).items():
            lines.append(f"{section}.{name} = {v:.4g}")
    lines.append("# sim/hardware.toml -- datapath_pJ fitted to sim/data/accelerator_targets.json")
    lines += [f"accelerator.{n}.datapath_pJ = {v:.4g}" for n, v in fit_accelerators().items()]
    lines.append(f"# computed: bcq_fixed.bank_conflict_factor = {bank_conflict_factor():.3g}")
    return "\n".join(lines)

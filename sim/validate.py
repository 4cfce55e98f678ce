"""Measured numbers and the model's error against them.

Data (committed):
    sim/data/anchors_h100.json           ANCHORS.md 1: cuBLAS FP16 and Any-Precision on H100 (do_bench)
    benchmarks/results/gemv_h100.json    our kernel and cuBLAS on H100 (benchmarks/gemv.py): the fit
    benchmarks/results/gemv_h200.json    the same benchmark on an H200: out of sample for the methods above;
                                         the fit of bcq_bmma and bcq_imma (measured on the H200 only)
    sim/data/accelerator_targets.json    FIGLUT paper: TOPS/W of FIGLUT, FIGNA, iFPU and the bit-width trend

Error of one prediction: (predicted - measured) / measured.  A method's score is the median of
the absolute errors over its measurements (the issue's acceptance metric).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import accel
from .gpu import gemv, method_name
from .kernels import default_kernels
from .workload import get_model

DATA = Path(__file__).parent / "data"
ANCHORS_JSON = DATA / "anchors_h100.json"
ACCEL_TARGETS_JSON = DATA / "accelerator_targets.json"
GPU_RESULTS_JSON = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "gemv_h100.json"
H200_RESULTS_JSON = GPU_RESULTS_JSON.with_name("gemv_h200.json")
RESULT_KEYS = ("layer", "N", "K", "M", "method", "bits", "us")
RESULT_METHODS = {"cublas_fp16": "fp16", "bcq_lut": "bcq_lut", "bcq_dequant_cublas": "bcq_dequant",
                  "bcq_bmma": "bcq_bmma", "bcq_imma": "bcq_imma"}
UNMODELLED_METHODS = ("bcq_mma",)  # in the results file, not modelled here (skipped, see docs/sim.md)


@dataclass(frozen=True)
class Measurement:
    layer: str
    N: int
    K: int
    M: int
    method: str          # a sim method name (fp16, bcq_lut, anyprec)
    bits: int | None
    us: float
    source: str
    timing: str = "cuda_graph"   # or "do_bench": kernels.timing says what it adds


def load_anchors(path: str | Path = ANCHORS_JSON) -> list[Measurement]:
    """cuBLAS FP16 and Any-Precision rows of the H100 anchor table."""
    data = json.loads(Path(path).read_text())
    out = []
    for r in data["rows"]:
        out.append(Measurement(r["key"], r["N"], r["K"], r["M"], "fp16", None, r["cublas_fp16_us"], "anchors",
                               "do_bench"))
        for b, us in r["anyprec_us"].items():
            out.append(Measurement(r["key"], r["N"], r["K"], r["M"], "anyprec", int(b), us, "anchors", "do_bench"))
    return out


def load_gpu_results(path: str | Path = GPU_RESULTS_JSON) -> list[Measurement]:
    """Records of benchmarks/results/gemv_h100.json: a list of records, or {"meta": ..., "records": [...]}.

    Each record needs layer, N, K, M, method (a key of RESULT_METHODS),
    bits (null for fp16, 1..8 otherwise) and us (median microseconds, > 0); other keys are ignored.
    Records of methods in UNMODELLED_METHODS are skipped; any other method is an error.
    Timing is CUDA-graph replay (benchmarks/gemv.py) unless meta.method names do_bench.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no GPU results yet (written by `python -m benchmarks.gemv` on an H100)")
    data = json.loads(path.read_text())
    records = data["records"] if isinstance(data, dict) and "records" in data else data
    meta = data.get("meta", {}) if isinstance(data, dict) else {}
    timing = "do_bench" if "do_bench" in str(meta.get("method", "")) else "cuda_graph"
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty list of records (or an object with 'records')")
    out = []
    for i, r in enumerate(records):
        where = f"{path.name} record {i}"
        if not isinstance(r, dict):
            raise ValueError(f"{where}: must be an object, got {type(r).__name__}")
        missing = [k for k in RESULT_KEYS if k not in r]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}; a record needs {list(RESULT_KEYS)}")
        if r["method"] in UNMODELLED_METHODS:
            continue
        if r["method"] not in RESULT_METHODS:
            raise ValueError(f"{where}: method must be one of {list(RESULT_METHODS) + list(UNMODELLED_METHODS)}, "
                             f"got {r['method']!r}")
        for k in ("N", "K", "M"):
            if not (isinstance(r[k], int) and r[k] > 0):
                raise ValueError(f"{where}: {k} must be a positive integer, got {r[k]!r}")
        if r["method"] == "cublas_fp16" and r["bits"] is not None:
            raise ValueError(f"{where}: bits must be null for cublas_fp16, got {r['bits']!r}")
        if r["method"] != "cublas_fp16" and not (isinstance(r["bits"], int) and 1 <= r["bits"] <= 8):
            raise ValueError(f"{where}: bits must be an integer 1..8 for {r['method']}, got {r['bits']!r}")
        if not (isinstance(r["us"], (int, float)) and r["us"] > 0 and np.isfinite(r["us"])):
            raise ValueError(f"{where}: us must be a positive number, got {r['us']!r}")
        out.append(Measurement(str(r["layer"]), r["N"], r["K"], r["M"], RESULT_METHODS[r["method"]], r["bits"],
                               float(r["us"]), path.stem, timing))
    if not out:
        raise ValueError(f"{path}: no record of a modelled method ({list(RESULT_METHODS)})")
    return out


def predict_us(device, measurements, kernels=None) -> np.ndarray:
    """The model's microseconds for each measurement (one vectorised call per method), plus what
    the measurement's timing method adds (kernels.timing: do_bench over CUDA-graph replay)."""
    kc = kernels or default_kernels()
    pred = np.empty(len(measurements))
    by_method: dict[str, list[int]] = {}
    for i, m in enumerate(measurements):
        by_method.setdefault(method_name(m.method), []).append(i)
    for method, idx in by_method.items():
        ms = [measurements[i] for i in idx]
        arr = lambda f: np.array([f(m) for m in ms], dtype=np.float64)  # noqa: E731
        bits = None if method == "fp16" else arr(lambda m: m.bits)
        c = gemv(device, method, arr(lambda m: m.N), arr(lambda m: m.K), arr(lambda m: m.M), bits, kernels=kc)
        do_bench = kc.timing.do_bench_extra_cublas_s if method == "fp16" else kc.timing.do_bench_extra_kernel_s
        extra = arr(lambda m: do_bench if m.timing == "do_bench" else 0.0)
        pred[idx] = (c.time_s + extra) * 1e6
    return pred


def errors(device, measurements, kernels=None) -> np.ndarray:
    meas = np.array([m.us for m in measurements])
    return predict_us(device, measurements, kernels) / meas - 1.0


def summarise(device, measurements, kernels=None) -> dict[str, dict]:
    """{method: {n, median_abs_err, max_abs_err}} plus per-row detail under 'rows'."""
    err = errors(device, measurements, kernels)
    pred = predict_us(device, measurements, kernels)
    out = {}
    for method in dict.fromkeys(m.method for m in measurements):
        e = np.array([err[i] for i, m in enumerate(measurements) if m.method == method])
        out[method] = dict(n=len(e), median_abs_err=float(np.median(np.abs(e))), max_abs_err=float(np.max(np.abs(e))))
    out["rows"] = [dict(layer=m.layer, N=m.N, K=m.K, M=m.M, method=m.method, bits=m.bits, measured_us=m.us,
                        predicted_us=float(p), err=float(e)) for m, p, e in zip(measurements, pred, err)]
    return out


# ---------------------------------------------------------------- accelerators

def load_accelerator_targets(path: str | Path = ACCEL_TARGETS_JSON) -> dict:
    return json.loads(Path(path).read_text())


def accelerator_report(targets: dict | None = None, devices=None) -> dict:
    """Predicted TOPS/W, throughput and the FIGLUT/FIGNA ratio on the paper's workload."""
    targets = targets or load_accelerator_targets()
    w = targets["workload"]
    cfg = get_model(w["model"])
    layers = [(N, K, cfg.layers) for _, N, K in cfg.linears()]
    dev = devices or {}
    get = lambda name: dev.get(name, name)  # noqa: E731
    run = lambda name, q: accel.model_gemm(get(name), layers, w["batch"], q)  # noqa: E731
    out = {"tops_per_W": {}, "throughput_TOPS": {}, "power_W": {}, "ratio": {}}
    for name, target in targets["tops_per_W_4bit"].items():
        c = run(name, w["bits"])
        out["tops_per_W"][name] = dict(predicted=float(c.tops_per_W), target=target,
                                       err=float(c.tops_per_W) / target - 1)
        out["throughput_TOPS"][name] = dict(predicted=float(c.achieved_flops_per_s) / 1e12,
                                            target=targets["throughput_TOPS_4bit"])
        out["power_W"][name] = dict(predicted=float(c.power_W), target=targets["power_W_4bit"][name])
    figna = float(run("FIGNA", 4).tops_per_W)
    for q, target in targets["figlut_over_figna"].items():
        r = float(run("FIGLUT", float(q)).tops_per_W) / float(run("FIGNA", float(q)).tops_per_W)
        out["ratio"][q] = dict(predicted=r, target=target, err=r / target - 1)
    r = float(run("FIGLUT", 2.4).tops_per_W) / float(run("FIGNA", 3).tops_per_W)
    out["ratio_2.4_vs_figna_3"] = dict(predicted=r, target=targets["figlut_2p4_over_figna_3"],
                                       err=r / targets["figlut_2p4_over_figna_3"] - 1)
    out["figna_4bit_tops_per_W"] = figna
    return out

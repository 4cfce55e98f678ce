"""The GEMV benchmark's table and targets on an H100, as the cost model predicts them (nothing measured).

    python -m benchmarks.model_estimate --out benchmarks/results        # also: bcq bench model-estimate

The kernel issue sets its targets on an H100, and our tensor-core kernels have been measured on an
H200 only.  The two GPUs share the SM (132 SMs of sm_90 at the same clocks) and differ in memory
bandwidth (3.35 against 4.8 TB/s), which is what the model is built around: ``sim`` prices each call as
a chain of dependent steps (latencies fitted on the H200, ``sim/kernels.toml``) overlapping a memory
stream at the GPU's own bandwidth (``sim/hardware.toml``).  The same assumption, that latencies carry
between the two, predicted our LUT kernel's H200 run from its H100 fit to 2.7 % (median, docs/sim.md).

Each row of ``benchmarks.gemv`` is rebuilt for the H100:

    us        bcq_bmma, bcq_imma: sim.layer_cost(H100-SXM, method, N, K, M, p)   (the model)
              cublas_fp16: the measured row of benchmarks/results/gemv_h100.json (same layers and batches)
    floor_us  bcq_bytes(N, K, M, p) / that run's measured copy bandwidth

and ``benchmarks.gemv.markdown`` writes the usual table and target report on them, followed by how far
each target is from its threshold against the model's own error on the H200 rows it was fitted to.

The peer's numbers are taken as the anchor table has them: do_bench times, which the sim puts about
3.7 us a call above a CUDA-graph replay like ours (``timing.do_bench_extra_kernel_s``, an assumption), so
the comparison leans our way, most on the small layers, as the measured H100 report's does.

Results: OUT/gemv_h100_model.json and .md (rows in the gemv benchmark's schema; ``model`` says which
times are the model's).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .gemv import (BATCHES, BITS, GROUP, LAYERS, bcq_bytes, fp16_bytes, issue_targets, markdown, need_us,
                   save_results)

DEVICE = "H100-SXM"
H100_RESULTS = Path(__file__).resolve().parent / "results" / "gemv_h100.json"
MODELLED = ("bcq_bmma", "bcq_imma")  # the kernels the model prices; the dispatcher's choices at batch 1-16
GPU_LABEL = "NVIDIA H100 80GB HBM3"  # the GPU of gemv_h100.json: the peers' numbers are compared on it


def load_h100_run(path: Path = H100_RESULTS) -> tuple[float, dict]:
    """(copy bandwidth in bytes/s, {(layer, M): cuBLAS FP16 us}) of the committed H100 GEMV run."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "meta" not in data or "records" not in data:
        raise ValueError(f"path: {path} is not a gemv result (needs 'meta' and 'records')")
    fp16 = {(r["layer"], r["M"]): r["us"] for r in data["records"] if r["method"] == "cublas_fp16"}
    return float(data["meta"]["copy_bandwidth_Bps"]), fp16


def modelled_records(copy_bandwidth_Bps: float, fp16_us: dict, device: str = DEVICE, layers=LAYERS,
                     batches=BATCHES, bits=BITS) -> list[dict]:
    """The gemv benchmark's records with the BCQ times from the model; (layer, M) without an FP16
    measurement in ``fp16_us`` are left out (every ratio needs one)."""
    from sim import layer_cost

    records = []
    for name, (N, K) in layers.items():
        for M in batches:
            if (name, M) not in fp16_us:
                continue
            t_fp16 = fp16_us[(name, M)]
            records.append(dict(layer=name, N=N, K=K, M=M, method="cublas_fp16", bits=None, us=t_fp16,
                                bytes=fp16_bytes(N, K, M), model=False))
            for method in MODELLED:
                for p in bits:
                    us = float(layer_cost(device, method, N, K, M, p, g=GROUP).time_s) * 1e6
                    if np.isfinite(us):  # NaN: the kernel does not take this call
                        records.append(dict(layer=name, N=N, K=K, M=M, method=method, bits=p, us=us,
                                            bytes=bcq_bytes(N, K, M, p), speedup_vs_fp16=t_fp16 / us, model=True))
    for r in records:
        r["floor_us"] = r["bytes"] / copy_bandwidth_Bps * 1e6
        r["fraction_of_floor"] = r["floor_us"] / r["us"]
    return records


def model_error() -> dict[str, float]:
    """{method: median absolute relative error, leave-one-out} of the model on the H200 rows of each
    modelled kernel (benchmarks/results/gemv_h200.json), the error bar of every estimate here."""
    from sim.calibrate import leave_one_out
    from sim.validate import H200_RESULTS_JSON, load_gpu_results

    ms = load_gpu_results(H200_RESULTS_JSON)
    return {m: float(np.median(np.abs(leave_one_out(m, [r for r in ms if r.method == m])))) for m in MODELLED}


def margins(records, errors: dict[str, float]) -> list[dict]:
    """Each target of the kernel issue (benchmarks.gemv.issue_targets) with the time that meets it and
    margin = that time / the model's (met where >= 1).  ``close``: the margin is within the kernel's
    leave-one-out median error of 1 either way."""
    names = {"floor": "85 % of the floor", "peer": "1.5x Any-Precision ({} us)", "fp16": "3x FP16 ({:.1f} us)"}
    out = []
    for t in issue_targets(records):
        r, need = t["r"], need_us(t)
        m = need / r["us"]
        out.append(dict(target=f"{t['layer']}, M={t['M']}, {t['bits']}-bit: " + names[t["kind"]].format(t["ref_us"]),
                        method=r["method"], model_us=r["us"], need_us=need, margin=m,
                        close=abs(m - 1) <= errors[r["method"]]))
    return out


def report(meta, records, errors) -> str:
    """The gemv benchmark's markdown on the modelled rows, then the targets' margins."""
    rows = margins(records, errors)
    title = f"GEMV on an H100 as the cost model predicts it, not measured ({meta['date']})"
    table = markdown(meta, records, title, best_heading="Fastest of the modelled kernels (1-bit and int8 tensor-core)")
    lines = [table.rstrip("\n"), "", "## Margins against the model's error", "",
             "margin = the target's time / the model's time (the target is met where it is at least 1). "
             "The model's leave-one-out median error on the H200 rows: "
             + ", ".join(f"{m} {100 * e:.1f} %" for m, e in errors.items())
             + "; a margin closer to 1 than that is too close to call.", "",
             "| target | kernel | model us | target us | margin | verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        verdict = "too close to call" if r["close"] else ("met" if r["margin"] >= 1 else "missed")
        lines.append(f"| {r['target']} | {r['method']} | {r['model_us']:.1f} | {r['need_us']:.1f} | "
                     f"{r['margin']:.2f} | {verdict} |")
    met = sum(r["margin"] >= 1 and not r["close"] for r in rows)
    close = sum(r["close"] for r in rows)
    lines += ["", f"{met} of {len(rows)} targets met by the model beyond its error, {close} too close to call, "
                  f"{len(rows) - met - close} missed."]
    return "\n".join(lines) + "\n"


def run(out_dir: Path, h100_results: Path = H100_RESULTS) -> tuple[dict, list]:
    bw, fp16_us = load_h100_run(h100_results)
    records = modelled_records(bw, fp16_us)
    errors = model_error()
    meta = dict(gpu=GPU_LABEL, estimate=f"sim, device {DEVICE}: not measured", copy_bandwidth_Bps=bw,
                group_size=GROUP, date=time.strftime("%Y-%m-%d"),
                command="python -m benchmarks.model_estimate --out benchmarks/results",
                method=("BCQ times predicted by sim (bcq_bmma, bcq_imma on H100-SXM: latencies fitted on the "
                        "H200, memory at the H100's bandwidth), not measured; FP16 and the copy bandwidth "
                        "measured on an H100 (benchmarks/results/gemv_h100.json)"),
                model_error_leave_one_out=errors)
    save_results(out_dir, "gemv_h100_model", meta, "records", records, report(meta, records, errors))
    return meta, records


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--quick", action="store_true", help="accepted for bcq bench; the run takes seconds anyway")
    args = ap.parse_args(argv)
    run(args.out)
    print((args.out / "gemv_h100_model.md").read_text())


if __name__ == "__main__":
    main()

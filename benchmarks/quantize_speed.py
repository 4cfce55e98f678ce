"""Quantizer speed on the CPU: one 4096 x 4096 float32 matrix, 2 -> 4 bits, g = 128, T = 20.

    python -m benchmarks.quantize_speed            (writes benchmarks/results/quantize_speed.{json,md})
    python -m benchmarks.quantize_speed --quick    (256 x 1024, one repeat, CI smoke run: *_quick.{json,md})

The target (issue 2): progressive AnyBCQ quantization of that matrix in under 10 s on a 2-core CPU.

Method: the matrix is Student-t (5 degrees of freedom) times 0.02, seed 0.  A warm-up on a small
matrix first loads the numba kernels (compiled once, cached in __pycache__), so compile time is not
counted.  Each method runs `repeats` times in this process, timed with time.perf_counter; the median
is reported, with the load average around the run because the machine may be shared.

    progressive  quantize(W, method="progressive"): 2-bit fit + two expansions
    joint        quantize(W, method="joint"): progressive, a fixed 4-bit fit, joint descents, pick
    fixed        quantize_fixed(W): 2-, 3- and 4-bit fits, each on its own
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np

from bcq_core.fileio import atomic_write_text
from bcq_core.quantize import QuantConfig, quantize, quantize_fixed

TARGET_S = 10.0
METHODS = ("progressive", "joint", "fixed")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_method(W, method, config):
    if method == "fixed":
        return quantize_fixed(W, config)
    return quantize(W, QuantConfig(**{**config.__dict__, "method": method}))


def run(out_dir: Path, N=4096, K=4096, repeats=3, quick=False):
    if quick:
        N, K, repeats = 256, 1024, 1
    config = QuantConfig(bits=(2, 3, 4), group_size=128, iters=20)
    W = (np.random.default_rng(0).standard_t(5, size=(N, K)) * 0.02).astype(np.float32)
    for method in METHODS:  # warm-up: load the cached numba kernels (or compile them once)
        run_method(W[:8, :256], method, config)
    load_before = os.getloadavg()
    records = []
    for method in METHODS:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run_method(W, method, config)
            times.append(time.perf_counter() - t0)
        records.append({"method": method, "median_s": round(statistics.median(times), 3),
                        "min_s": round(min(times), 3), "times_s": [round(t, 3) for t in times]})
        print(f"{method:12s} median {statistics.median(times):6.2f} s  ({', '.join(f'{t:.2f}' for t in times)})")
    meta = {"command": "python -m benchmarks.quantize_speed" + (" --quick" if quick else ""),
            "shape": [N, K], "bits": list(config.bits), "group_size": config.group_size, "iters": config.iters,
            "matrix": "Student-t (df 5) * 0.02, float32, seed 0", "repeats": repeats,
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "numba_threads": numba.get_num_threads(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "target_s": TARGET_S, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    stem = Path(out_dir) / ("quantize_speed_quick" if quick else "quantize_speed")
    atomic_write_text(stem.with_suffix(".json"), json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    atomic_write_text(stem.with_suffix(".md"), markdown(meta, records))
    return meta, records


def markdown(meta, records) -> str:
    N, K = meta["shape"]
    lines = [f"# Quantizer speed: {N} x {K} float32, bits {meta['bits']}, g = {meta['group_size']}, "
             f"T = {meta['iters']}", "",
             f"Command: `{meta['command']}`  ", f"CPU: {meta['cpu']} ({meta['cpu_count']} cores visible, "
             f"{meta['numba_threads']} numba threads); load average {meta['loadavg_before']} before, "
             f"{meta['loadavg_after']} after  ",
             f"Matrix: {meta['matrix']}; median of {meta['repeats']} runs after a warm-up (numba kernels cached).  ",
             f"Python {meta['python']}, NumPy {meta['numpy']}, numba {meta['numba']}; {meta['date']}", "",
             "| method | median (s) | min (s) | runs (s) |", "|---|---:|---:|---|"]
    for r in records:
        lines.append(f"| {r['method']} | {r['median_s']:.2f} | {r['min_s']:.2f} | "
                     f"{', '.join(f'{t:.2f}' for t in r['times_s'])} |")
    prog = next(r for r in records if r["method"] == "progressive")
    lines += ["", f"Target: progressive under {meta['target_s']:.0f} s: "
              f"{'met' if prog['median_s'] < meta['target_s'] else 'NOT met'} ({prog['median_s']:.2f} s).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"), help="results folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small matrix, one repeat (CI smoke run)")
    args = parser.parse_args(argv)
    meta, records = run(Path(args.out), repeats=args.repeats, quick=args.quick)
    prog = next(r for r in records if r["method"] == "progressive")
    if not args.quick:
        assert prog["median_s"] < TARGET_S, f"progressive took {prog['median_s']} s, target {TARGET_S} s"
    return 0


if __name__ == "__main__":
    sys.exit(main())

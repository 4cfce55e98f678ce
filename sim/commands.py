"""``bcq sim``: what-if tables, roofline plots, validation and calibration from the command line.

    bcq sim --device H100-SXM --model llama-3.1-8b --bits 2,3,4 --batch 1        decode tokens/s
    bcq sim --device H100 --shape 28672x4096 --bits 2,3,4 --batch 1,8,32          one layer
    bcq sim --device FIGLUT --model opt-6.7b --bits 2,3,4 --batch 32             accelerator TOPS/W
    bcq sim ... --json                     the same rows as JSON
    bcq sim --device H100 --roofline out.png                                      measured points overlaid
    bcq sim --device H100 --whatif out.png      our kernel's speed-up vs batch, measured + latency what-ifs
    bcq sim --validate                     errors against every committed measurement
    bcq sim --calibrate [--results benchmarks/results/gemv_h100.json]            fitted constants as TOML
    bcq sim --list                         devices, methods, models
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

DEFAULT_METHODS = "fp16,bcq_lut,anyprec"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sim", help="cost model: what-if tables, roofline plots, validation",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="H100-SXM", help="a device of sim/hardware.toml (default H100-SXM)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--model", help="a model of sim/data/models.toml: decode tokens/s")
    what.add_argument("--shape", action="append", metavar="NxK", help="one layer, N outputs x K inputs (repeatable)")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"GPU methods, comma-separated (default {DEFAULT_METHODS}; also bcq_imma_chunks, bcq_dequant, "
                   "bcq_auto, bcq_fixed, int4, or 'all')")
    p.add_argument("--bits", default="2,3,4", help="precisions, comma-separated (default 2,3,4)")
    p.add_argument("--batch", default="1", help="batch sizes M, comma-separated (default 1)")
    p.add_argument("--context", type=int, default=1024, help="tokens in the KV cache for --model (default 1024)")
    p.add_argument("--mu", type=int, default=None, help="bcq_lut key width (default: the kernel's, 8)")
    p.add_argument("--group-size", type=int, default=128, help="g for --shape (models use their own; default 128)")
    p.add_argument("--hardware", action="append", default=[], metavar="TOML", help="extra device file(s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    p.add_argument("--roofline", metavar="PNG", help="save a roofline plot with the measured points overlaid")
    p.add_argument("--whatif", metavar="PNG", help="save the latency what-if of our kernel (speed-up vs batch) "
                   "for the --shape layers (default: 8B gate+up, 70B down)")
    p.add_argument("--validate", action="store_true", help="print the model's error against the committed data")
    p.add_argument("--calibrate", action="store_true", help="print the fitted constants as TOML")
    p.add_argument("--results", default=None, help="our GPU results JSON for --calibrate/--validate/--roofline")
    p.add_argument("--list", action="store_true", help="list devices, methods and models")
    p.set_defaults(func=run)


def _ints(text: str, what: str) -> list:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{what}: expected comma-separated numbers, got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise ValueError(f"--{what}: expected positive numbers, got {text!r}")
    return [int(v) if v == int(v) else v for v in vals]


def _shape(text: str) -> tuple[int, int]:
    try:
        N, K = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--shape: expected NxK such as 4096x4096, got {text!r}") from None
    if N <= 0 or K <= 0:
        raise ValueError(f"--shape: N and K must be positive, got {text!r}")
    return N, K


def _fmt(v, digits=1) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{digits}f}"


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def run(args) -> int:
    from .gpu import GPU_METHODS, method_name
    from .hardware import GPU, get_device, load_hardware

    devices = load_hardware(extra=args.hardware) if args.hardware else None
    if args.list:
        from .workload import load_models
        devs = devices or load_hardware()
        print(_table(["device", "kind", "notes"], [(n, type(d).__name__, d.notes) for n, d in devs.items()]))
        print("\nGPU methods: " + ", ".join(GPU_METHODS) + "\nmodels: " + ", ".join(load_models()))
        return 0
    if args.calibrate:
        from .calibrate import report
        print(report(None, args.results))  # each fit on the device its data was measured on
        return 0
    if args.validate:
        print(validation_markdown(args.results))
        return 0
    dev = get_device(args.device, devices)
    bits, batches = _ints(args.bits, "bits"), [int(b) for b in _ints(args.batch, "batch")]
    methods = list(GPU_METHODS) if args.methods == "all" else [method_name(m) for m in args.methods.split(",")]
    if args.roofline:
        _roofline(dev, args)
    if args.whatif:
        _whatif(dev, args)
    if args.model:
        rows = _model_rows(dev, args.model, methods, bits, batches, args.context, isinstance(dev, GPU))
    else:
        shapes = [_shape(s) for s in args.shape] if args.shape else \
            ([] if args.roofline or args.whatif else [(4096, 4096)])
        if args.whatif:
            shapes = []
        rows = _shape_rows(dev, shapes, methods, bits, batches, args.mu, args.group_size, isinstance(dev, GPU))
    if not rows:
        return 0
    if args.json:
        json.dump(rows, sys.stdout, indent=1, default=float)
        print()
    else:
        print(_table(list(rows[0]), [[_fmt(v, 2) if isinstance(v, float) else v for v in r.values()] for r in rows]))
    return 0


def _model_rows(dev, model, methods, bits, batches, context, on_gpu):
    from .workload import decode
    rows = []
    for M in batches:
        base = decode(dev, model, "fp16", None, M, context=context).step_s if on_gpu else None
        for method in (methods if on_gpu else [dev.name]):
            for b in ([None] if method == "fp16" else bits):
                r = decode(dev, model, method, b, M, context=context)
                big = max(r.layers, key=lambda row: row[4] * row[5])
                row = {"model": r.model, "device": r.device, "method": r.method, "bits": b if b else "fp16",
                       "batch": M, "tokens/s": r.tokens_per_s, "step ms": r.step_s * 1e3,
                       "weights GB": r.weight_bytes / 1e9}
                if on_gpu:
                    row["x fp16"] = base / r.step_s
                    row["fits"] = "yes" if r.weight_bytes <= dev.memory_bytes else \
                        ("n/a" if math.isnan(r.weight_bytes) else "no")
                else:
                    row["TOPS/W"] = 2 * M * sum(N * K * n for _, N, K, _, n, _, _ in r.layers) / r.energy_J / 1e12
                    row["mJ/token"] = r.energy_J / M * 1e3
                row["largest layer bound by"] = big[6]
                rows.append(row)
    return rows


def _shape_rows(dev, shapes, methods, bits, batches, mu, g, on_gpu):
    from .gpu import gemv
    from .workload import G_METHODS
    from .accel import gemm
    rows = []
    for N, K in shapes:
        for M in batches:
            if not on_gpu:
                for b in bits:
                    c = gemm(dev, N, K, M, b)
                    rows.append({"N x K": f"{N} x {K}", "batch": M, "device": dev.name, "bits": b,
                                 "us": float(c.time_s) * 1e6, "TOPS/W": float(c.tops_per_W),
                                 "uJ": float(c.energy_total_J) * 1e6, "bound by": str(c.binding)})
                continue
            base = float(gemv(dev, "fp16", N, K, M).time_s)
            for method in methods:
                opts = {"g": g} if method in G_METHODS else {}
                if method in ("bcq_lut", "bcq_auto") and mu is not None:
                    opts["mu"] = mu
                for b in ([None] if method == "fp16" else [4] if method == "int4" else bits):
                    c = gemv(dev, method, N, K, M, b, **opts)
                    t = float(c.time_s)
                    rows.append({"N x K": f"{N} x {K}", "batch": M, "method": method, "bits": b if b else "fp16",
                                 "us": t * 1e6, "GB/s": float(c.bytes_total) / t / 1e9,
                                 "x fp16": base / t, "bound by": str(c.binding)})
    return rows


def _roofline(dev, args):
    from .plot import roofline_plot
    measured = [m for m in _measured(dev, args) if m.method != "bcq_dequant"]  # two kernels: no single point
    shapes = [_shape(s) for s in args.shape] if args.shape else [(28672, 4096), (57344, 8192)]
    points = [("bcq_lut", N, K, M, b) for N, K in shapes for M in (1, 8, 32) for b in (2, 4)]
    path = roofline_plot(dev, args.roofline, measured, points)
    print(f"roofline saved to {path}", file=sys.stderr)


def _measured(dev, args) -> list:
    from pathlib import Path
    from .validate import GPU_RESULTS_JSON, load_anchors, load_gpu_results
    if dev.name != "H100-SXM":
        return []
    results = Path(args.results) if args.results else GPU_RESULTS_JSON
    return list(load_anchors()) + (load_gpu_results(results) if results.is_file() else [])


def _whatif(dev, args):
    from .plot import latency_whatif_plot
    layers = [(f"{N} x {K}", N, K) for N, K in map(_shape, args.shape)] if args.shape else \
        [("8B gate+up", 28672, 4096), ("70B down", 8192, 28672)]
    path = latency_whatif_plot(args.whatif, dev, layers, measurements=_measured(dev, args))
    print(f"what-if plot saved to {path}", file=sys.stderr)


def validation_markdown(results=None) -> str:
    """Every validation target with its measured error (what docs/sim.md quotes)."""
    from pathlib import Path
    from .validate import GPU_RESULTS_JSON, accelerator_report, load_anchors, load_gpu_results, summarise
    out = ["## H100 GEMV (sim/data/anchors_h100.json)", ""]
    s = summarise("H100-SXM", load_anchors())
    out.append(_table(["layer", "M", "method", "bits", "measured us", "model us", "error"],
                      [(r["layer"], r["M"], r["method"], r["bits"] or "fp16", f"{r['measured_us']:.1f}",
                        f"{r['predicted_us']:.1f}", f"{100 * r['err']:+.1f} %") for r in s["rows"]]))
    out += ["", _table(["method", "n", "median abs error", "max abs error"],
                       [(m, v["n"], f"{100 * v['median_abs_err']:.1f} %", f"{100 * v['max_abs_err']:.1f} %")
                        for m, v in s.items() if m != "rows"])]
    from .calibrate import FIT_DEVICE, leave_one_out
    path = Path(results) if results else GPU_RESULTS_JSON
    out += ["", f"## Our kernel ({path}; the methods fitted on the H200 are left out)", ""]
    if path.is_file():
        g = summarise("H100-SXM", [m for m in load_gpu_results(path) if m.method not in FIT_DEVICE])
        out.append(_table(["method", "n", "median abs error", "max abs error"],
                          [(m, v["n"], f"{100 * v['median_abs_err']:.1f} %", f"{100 * v['max_abs_err']:.1f} %")
                           for m, v in g.items() if m != "rows"]))
    else:
        out.append("not measured yet (benchmarks/results/gemv_h100.json is absent)")
    from .validate import H200_RESULTS_JSON, load_gpu_results
    out += ["", f"## Our kernels fitted on the H200 ({H200_RESULTS_JSON.name}; fitted there, in-sample)", ""]
    if H200_RESULTS_JSON.is_file():
        ms = [m for m in load_gpu_results(H200_RESULTS_JSON) if m.method in FIT_DEVICE]
        h = summarise("H200", ms)
        out.append(_table(["layer", "M", "method", "bits", "measured us", "model us", "error"],
                          [(r["layer"], r["M"], r["method"], r["bits"], f"{r['measured_us']:.1f}",
                            f"{r['predicted_us']:.1f}", f"{100 * r['err']:+.1f} %") for r in h["rows"]]))
        loo = {m: np.abs(leave_one_out(m, ms)) for m in FIT_DEVICE}
        out += ["", _table(["method", "n", "median abs error", "max abs error", "leave-one-out median", "leave-one-out max"],
                           [(m, v["n"], f"{100 * v['median_abs_err']:.1f} %", f"{100 * v['max_abs_err']:.1f} %",
                             f"{100 * np.median(loo[m]):.1f} %", f"{100 * np.max(loo[m]):.1f} %")
                            for m, v in h.items() if m != "rows"])]
    else:
        out.append(f"not measured ({H200_RESULTS_JSON} is absent)")
    a = accelerator_report()
    out += ["", "## Accelerators (OPT-6.7B, batch 32; FIGLUT paper)", "",
            _table(["design", "model TOPS/W", "paper", "error", "model TOPS", "model W", "paper W"],
                   [(n, f"{v['predicted']:.3f}", v["target"], f"{100 * v['err']:+.1f} %",
                     f"{a['throughput_TOPS'][n]['predicted']:.3f}", f"{a['power_W'][n]['predicted']:.3f}",
                     a["power_W"][n]["target"]) for n, v in a["tops_per_W"].items()]), "",
            _table(["bits", "model FIGLUT / FIGNA", "paper", "error"],
                   [(q, f"{v['predicted']:.2f}", v["target"], f"{100 * v['err']:+.1f} %")
                    for q, v in a["ratio"].items()]
                   + [("2.4 vs FIGNA 3", f"{a['ratio_2.4_vs_figna_3']['predicted']:.2f}",
                       a["ratio_2.4_vs_figna_3"]["target"], f"{100 * a['ratio_2.4_vs_figna_3']['err']:+.1f} %")])]
    return "\n".join(out)

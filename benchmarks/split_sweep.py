"""How the exact contract's split size (reference/exact_mma.py: SPLIT_CHOICES) sets the speed of the
exact tensor-core kernels.

    python -m benchmarks.split_sweep --out benchmarks/results

The split is part of the arithmetic contract (groups are summed in order within a split, splits in
order after), so it is chosen for speed, per layer shape (reference.exact_mma.contract_split, which
this sweep informs), and the reference follows it.  A smaller split gives
more independent warps (rows / 16 x splits) to hide load latency, and more partial sums to add
at the end.  This sweeps the candidates on the shapes where that trade-off differs most, timed as
benchmarks/gemv.py times (CUDA-graph replay, weights rotated past L2), in one process.
Writes OUT/split_sweep_<gpu>.json and .md.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.gemv import (GROUP, copies_beyond_l2, device_name, gpu_slug, kernel_weights, parse_layer,
                             random_weights, save_results, time_graph)

SPLITS = (8192, 4096, 2048, 1024)  # reference.exact_mma.SPLIT_CHOICES
SHAPES = ("8B o", "8B down", "70B gate+up", "70B down")
CASES = (("bmma_gemv", 1), ("imma_gemm", 1), ("imma_gemm", 4), ("imma_gemm", 8))
BITS = (2, 3)


def run(out_dir: Path, splits=SPLITS, shapes=SHAPES, cases=CASES, bits=BITS,
        command="python -m benchmarks.split_sweep --out benchmarks/results"):
    """shapes: LAYERS names or NxK strings, or their parse (benchmarks.gemv.parse_layer), {name: (N, K)}."""
    import cupy

    import gpu

    rng = np.random.default_rng(0)
    records = []
    layers = shapes if isinstance(shapes, dict) else dict(map(parse_layer, shapes))
    for name, (N, K) in layers.items():
        n_copies = copies_beyond_l2(max(bits) * N * K // 8)
        planes, alphas = random_weights(cupy, rng, N, K, bits, n_copies)
        weights = {kernel: kernel_weights(gpu, kernel, planes) for kernel, _ in cases}  # both: tiles
        for split in splits:
            for kernel, M in cases:
                x = cupy.asarray(rng.standard_normal((M, K)).astype(np.float16))
                y = cupy.empty((M, N), dtype=cupy.float16)
                fn, w = getattr(gpu, kernel), weights[kernel]
                for p in bits:
                    t = time_graph(cupy, lambda i: fn(x, w[i][:p], alphas[p][i], group_size=GROUP, out=y,
                                                      split=split), n_copies)
                    records.append(dict(layer=name, N=N, K=K, M=M, kernel=kernel, bits=p, split=split, us=t))
                    print(f"{name:12s} split {split:5d} {kernel} M={M} {p}-bit {t:7.1f} us", flush=True)
        del planes, alphas, weights
        cupy.get_default_memory_pool().free_all_blocks()
    meta = dict(gpu=device_name(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)),
                date=time.strftime("%Y-%m-%d"),
                command=command, group_size=GROUP)
    stem = f"split_sweep_{gpu_slug(meta['gpu'])}"
    save_results(out_dir, stem, meta, "records", records, markdown(meta, records))
    print(markdown(meta, records))
    return records


def markdown(meta, records) -> str:
    idx = {(r["layer"], r["kernel"], r["M"], r["bits"], r["split"]): r["us"] for r in records}
    splits = sorted({r["split"] for r in records}, reverse=True)
    order = list(dict.fromkeys(r["layer"] for r in records))  # the layers in the order they ran
    rows = sorted({(r["layer"], r["kernel"], r["M"], r["bits"]) for r in records},
                  key=lambda k: (order.index(k[0]), k[1], k[2], k[3]))
    lines = [f"# Split size of the exact contract on {meta['gpu']} ({meta['date']})", "",
             f"Command: `{meta['command']}`. us per call (CUDA-graph replay, weights rotated past L2), "
             f"group size {meta['group_size']}; best split in bold.", "",
             "| layer | kernel | M | bits | " + " | ".join(f"split {s}" for s in splits) + " |",
             "|---|---|---|---|" + "---|" * len(splits)]
    for layer, kernel, M, p in rows:
        ts = [idx.get((layer, kernel, M, p, s)) for s in splits]
        best = min(t for t in ts if t is not None)
        lines.append(f"| {layer} | {kernel} | {M} | {p} | " + " | ".join(
            "-" if t is None else (f"**{t:.1f}**" if t == best else f"{t:.1f}") for t in ts) + " |")
    return "\n".join(lines) + "\n"


def parse_case(text: str) -> tuple[str, int]:
    """'imma_gemm:8' -> ('imma_gemm', 8); ValueError naming the rule otherwise."""
    kernel, _, m = text.partition(":")
    if kernel not in ("bmma_gemv", "imma_gemm") or not m.isdigit() or not 1 <= int(m) <= 16:
        raise ValueError(f"cases: each must be bmma_gemv:M or imma_gemm:M with M in 1..16, got {text!r}")
    return kernel, int(m)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--quick", action="store_true", help="two shapes, 2-bit only")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), help=f"layers of benchmarks.gemv.LAYERS or NxK "
                    f"shapes (default: {', '.join(SHAPES)})")
    ap.add_argument("--cases", nargs="+", default=[f"{k}:{m}" for k, m in CASES],
                    help="kernel:batch pairs, e.g. bmma_gemv:1 imma_gemm:8")
    ap.add_argument("--bits", type=int, nargs="+", default=list(BITS))
    args = ap.parse_args(argv)
    try:
        shapes = dict(map(parse_layer, args.shapes))
        if not set(args.bits) <= {1, 2, 3, 4}:
            raise ValueError(f"bits: each must be 1..4 (the exact kernels' planes), got {args.bits}")
        cases = tuple(parse_case(c) for c in args.cases)
    except ValueError as e:
        ap.error(str(e))
    if args.quick:
        run(args.out, shapes=("8B o", "70B down"), bits=(2,))
    else:
        run(args.out, shapes=shapes, cases=cases, bits=tuple(args.bits),
            command="python -m benchmarks.split_sweep " + shlex.join(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()

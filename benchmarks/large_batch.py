"""Batches past 16: the int8 tensor-core kernel in launches of 16 rows against dequantize + cuBLAS.

    python -m benchmarks.large_batch --out benchmarks/results/h200
    python -m benchmarks.large_batch --bits 1 --out /tmp/p1       # one precision

The int8 kernel takes at most 16 rows of x per launch, and its cost hardly grows with them; dequantize
writes the whole float16 W once per call, then cuBLAS multiplies.  So past 16 rows the question is how
many launches of 16 cost less than one dequantize + one cuBLAS GEMM.  For every layer of
``benchmarks.gemv.LAYERS``, precision and batch M this times, from the tile layout (what a ``BCQLinear``
keeps on CUDA) and as ``benchmarks.gemv`` does (CUDA-graph replay over weight copies larger than L2):

    fp16     cuBLAS FP16, x @ W^T
    chunks   gpu.imma_gemm on rows 16j .. 16j + 15 of x, ceil(M / 16) launches (bit-exact: rows never interact)
    dequant  gpu.dequantize(tiles) into W, then cuBLAS x @ W^T

``gpu.bcq_matmul`` takes the launches of 16 up to ``kernels.imma_chunk_launches(p, N, K)`` of them, from this table.
Results: OUT/large_batch_<gpu>.json and .md.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from gpu.kernels import IMMA_PLANES
from reference.exact_mma import MAX_MMA_BATCH as CHUNK  # rows per int8 launch

from .gemv import (BITS, GROUP, LAYERS, copies_beyond_l2, device_name, gpu_slug, random_weights, save_results,
                   time_graph, time_torch_graph)

BATCHES = (32, 48, 64, 96)


def run(out_dir: Path, layers=LAYERS, batches=BATCHES, bits=BITS, command=""):
    import cupy
    import torch

    import gpu

    rng = np.random.default_rng(0)
    rows = []
    for name, (N, K) in layers.items():
        n_fp16 = copies_beyond_l2(N * K * 2)
        n_bcq = copies_beyond_l2(max(bits) * N * K // 8)
        W = [torch.randn(N, K, device="cuda", dtype=torch.float16) * 0.02 for _ in range(n_fp16)]
        planes, alphas = random_weights(cupy, rng, N, K, bits, n_bcq)
        tiles = [gpu.tile_planes(P) for P in planes]
        del planes
        Wc = cupy.empty((N, K), dtype=cupy.float16)
        tW = torch.from_dlpack(Wc)
        for M in batches:
            x = cupy.asarray(rng.standard_normal((M, K)).astype(np.float16))
            y = cupy.empty((M, N), dtype=cupy.float16)
            tx, ty = torch.from_dlpack(x), torch.empty(M, N, device="cuda", dtype=torch.float16)
            t_fp16 = time_torch_graph(torch, lambda i: torch.matmul(tx, W[i].T, out=ty), n_fp16)
            for p in bits:
                def chunks(i, p=p):
                    for r in range(0, M, CHUNK):
                        gpu.imma_gemm(x[r:r + CHUNK], tiles[i][:p], alphas[p][i], group_size=GROUP,
                                      out=y[r:r + CHUNK])

                def dequant(i, p=p):
                    with gpu.torch_stream():
                        gpu.dequantize(None, alphas[p][i], group_size=GROUP, out=Wc, tiles=tiles[i][:p])
                    torch.matmul(tx, tW.T, out=ty)
                t_chunks = time_graph(cupy, chunks, n_bcq)
                t_dequant = time_torch_graph(torch, dequant, n_bcq)
                rows.append(dict(layer=name, N=N, K=K, M=M, bits=p, fp16_us=t_fp16, chunks_us=t_chunks,
                                 launches=-(-M // CHUNK), dequant_us=t_dequant, ratio=t_dequant / t_chunks))
                print(f"{name:12s} M={M:3d} {p}-bit  fp16 {t_fp16:7.1f} us  chunks {t_chunks:7.1f} us  "
                      f"dequant+cuBLAS {t_dequant:7.1f} us  ({t_dequant / t_chunks:4.2f}x)", flush=True)
        del W, tiles, alphas, Wc, tW
        cupy.get_default_memory_pool().free_all_blocks()
        torch.cuda.empty_cache()
    gpu_name = device_name(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id))
    meta = dict(gpu=gpu_name, group_size=GROUP, date=time.strftime("%Y-%m-%d"), command=command,
                method="CUDA-graph replay of 40 calls cycling through weight copies larger than L2, median of 15 "
                       "replays; cuBLAS through torch.matmul")
    save_results(out_dir, f"large_batch_{gpu_slug(gpu_name)}", meta, "rows", rows, markdown(meta, rows))
    return meta, rows


def markdown(meta, rows) -> str:
    """One line per (layer, M): FP16, the launches of 16 and dequantize + cuBLAS at every precision."""
    bits = sorted({r["bits"] for r in rows})
    by = {(r["layer"], r["M"], r["bits"]): r for r in rows}
    b = " / ".join(str(p) for p in bits)
    lines = [f"# Batches past 16 on {meta['gpu']}: int8 launches of 16 rows against dequantize + cuBLAS", "",
             f"`{meta['command']}` ({meta['date']}); {meta['method']}; group size {meta['group_size']}; "
             "both BCQ paths read the tile layout. dequant / chunks > 1: the launches of 16 are faster.", "",
             f"| layer | M | launches | FP16 µs | launches of 16, {b}-bit µs | dequantize + cuBLAS, {b}-bit µs "
             f"| dequant / chunks {b} |", "|---|---|---|---|---|---|---|"]
    for layer, M in dict.fromkeys((r["layer"], r["M"]) for r in rows):
        rs = [by[layer, M, p] for p in bits]
        lines.append(f"| {layer} | {M} | {rs[0]['launches']} | {rs[0]['fp16_us']:.1f} | "
                     + " / ".join(f"{r['chunks_us']:.1f}" for r in rs) + " | "
                     + " / ".join(f"{r['dequant_us']:.1f}" for r in rs) + " | "
                     + " / ".join(f"{r['ratio']:.2f}" for r in rs) + " |")
    wins = [r for r in rows if r["ratio"] > 1]
    most = {p: max([r["launches"] for r in wins if r["bits"] == p], default=0) for p in bits}
    fewest_lose = {p: min([r["launches"] for r in rows if r["bits"] == p and r["ratio"] <= 1], default=None)
                   for p in bits}
    lines += ["", "Launches of 16 faster in " + f"{len(wins)} of {len(rows)} cases; by precision, the most launches "
              "that won anywhere / the fewest that lost anywhere: "
              + ", ".join(f"{p}-bit {most[p]} / {fewest_lose[p] if fewest_lose[p] is not None else '-'}" for p in bits)
              + "."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--quick", action="store_true", help="two layers, 2-bit only, M = 32")
    ap.add_argument("--batches", type=int, nargs="+", default=list(BATCHES), help="batch sizes past 16")
    ap.add_argument("--bits", type=int, nargs="+", default=list(BITS),
                    help=f"precisions, {IMMA_PLANES[0]} to {IMMA_PLANES[-1]} (the int8 kernel's)")
    args = ap.parse_args(argv)
    if not set(args.bits) <= set(IMMA_PLANES):
        ap.error(f"bits: each must be {IMMA_PLANES[0]} to {IMMA_PLANES[-1]} (the int8 kernel's planes), "
                 f"got {args.bits}")
    if any(m <= CHUNK for m in args.batches):
        ap.error(f"batches: each must exceed {CHUNK} (up to {CHUNK} rows the int8 kernel takes one launch), "
                 f"got {args.batches}")
    command = "python -m benchmarks.large_batch " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.quick:
        run(args.out, layers={k: LAYERS[k] for k in ("8B o", "70B down")}, batches=(32,), bits=(2,), command=command)
    else:
        run(args.out, batches=tuple(args.batches), bits=tuple(sorted(set(args.bits))), command=command)


if __name__ == "__main__":
    main()

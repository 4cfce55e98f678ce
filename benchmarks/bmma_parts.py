"""How should the 1-bit kernel's warps share the work?  Every warp shape, timed side by side.

    python -m benchmarks.bmma_parts --out benchmarks/results      (bcq bench bmma-parts)

A warp shape is (parts, tiles per warp): ``bmma_gemv(..., parts=q, tiles_per_warp=r)`` lets q warps walk
1/q of each (16-row tile, split)'s steps, and each warp walk r tiles side by side; the bytes do not
change (checked here for every case against q = r = 1).  For every layer of ``benchmarks.gemv.LAYERS``,
batch and precision this times every shape the call's variant is compiled for, like ``benchmarks.gemv``
(CUDA-graph replay over weight copies larger than L2), and marks the shape that ``gpu.kernels.bmma_parts``
and ``gpu.kernels.bmma_tiles_per_warp`` pick, so the table says what those rules cost against the best.

Results: OUT/bmma_parts_<gpu>.json and .md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .gemv import (BITS, GROUP, LAYERS, bcq_bytes, copies_beyond_l2, copy_bandwidth, device_name, gpu_slug,
                   random_weights, save_results, time_graph)


def shape_key(parts: int, tiles_per_warp: int) -> str:
    """'QxR': Q parts, R tiles per warp."""
    return f"{parts}x{tiles_per_warp}"


def warp_shapes(kernels, S: int, Mp: int, p: int) -> dict[str, tuple[int, int]]:
    """Every (parts, tiles per warp) bmma_gemv<S, Mp, ...> is compiled for at p planes, by shape_key."""
    return {shape_key(q, r): (q, r) for q in kernels.bmma_parts_choices(S, Mp)
            for r in kernels.bmma_tiles_choices(S, Mp, p)}


def run(out_dir: Path, layers=LAYERS, batches=(1,), bits=BITS, command=""):
    import cupy

    import gpu
    from gpu import kernels
    from reference.exact_mma import contract_split
    from reference.lut_gemv import batch_bucket

    rng = np.random.default_rng(0)
    bw = copy_bandwidth(cupy)
    num_sms = cupy.cuda.Device().attributes["MultiProcessorCount"]
    S = kernels.BMMA_STEP // GROUP
    rows = []
    for name, (N, K) in layers.items():
        n = copies_beyond_l2(max(bits) * N * K // 8)
        planes, alphas = random_weights(cupy, rng, N, K, bits, n)
        tiles = [gpu.tile_planes(P) for P in planes]
        split = contract_split(N, K, GROUP)
        for M in batches:
            x = cupy.asarray(rng.standard_normal((M, K)).astype(np.float16))
            for p in bits:
                shapes = warp_shapes(kernels, S, batch_bucket(M), p)
                picked = shape_key(kernels.bmma_parts(M, N, K, GROUP, p, split, num_sms),
                                   kernels.bmma_tiles_per_warp(M, N, K, GROUP, p, split, num_sms))
                ys = {k: cupy.empty((M, N), cupy.float16) for k in shapes}

                def call(k):
                    q, r = shapes[k]
                    return lambda i: gpu.bmma_gemv(x, tiles[i][:p], alphas[p][i], group_size=GROUP, out=ys[k], parts=q,
                                                   tiles_per_warp=r)
                for k in shapes:
                    call(k)(0)
                same = all(bool((ys[k].view(cupy.uint16) == ys["1x1"].view(cupy.uint16)).all()) for k in shapes)
                times = {k: time_graph(cupy, call(k), n) for k in shapes}
                best = min(times, key=times.get)
                rows.append(dict(layer=name, N=N, K=K, M=M, bits=p, us=times, picked=picked, best=best,
                                 floor_us=bcq_bytes(N, K, M, p) / bw * 1e6, bytes_equal=same))
                print(f"{name:12s} M={M} {p}-bit  " + "  ".join(f"{k}: {t:6.1f} us" for k, t in times.items())
                      + f"  picked {picked}, best {best}, bytes equal: {same}", flush=True)
        del planes, alphas, tiles
        cupy.get_default_memory_pool().free_all_blocks()
    gpu_name = device_name(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id))
    meta = dict(gpu=gpu_name, num_sms=num_sms, copy_bandwidth_Bps=bw, group_size=GROUP,
                date=time.strftime("%Y-%m-%d"), command=command)
    stem = f"bmma_parts_{gpu_slug(gpu_name)}"
    save_results(out_dir, stem, meta, "rows", rows, markdown(meta, rows))
    return meta, rows


def markdown(meta, rows) -> str:
    """One line per case: µs of every warp shape (parts x tiles per warp), the rules' pick against the best,
    byte equality."""
    keys = sorted({k for r in rows for k in r["us"]}, key=lambda k: (int(k.split("x")[1]), int(k.split("x")[0])))
    lines = [f"# bmma_gemv: warp shapes (parts x tiles per warp) on {meta['gpu']}", "",
             f"`{meta['command']}` ({meta['date']}), group size {meta['group_size']}, {meta['num_sms']} SMs; "
             "CUDA-graph replay over weight copies larger than L2. A shape QxR is Q warps per (16-row tile, split) and "
             "R tiles per warp; *picked* is `gpu.kernels.bmma_parts` and `bmma_tiles_per_warp`'s choice.", "",
             "| layer | M | bits | " + " | ".join(f"{k} µs" for k in keys)
             + " | picked | best | picked / best time | outputs equal (bytes) |",
             "|---|---|---|" + "---|" * len(keys) + "---|---|---|---|"]
    for r in rows:
        cells = [f"{r['us'][k]:.1f}" if k in r["us"] else "-" for k in keys]
        lines.append(f"| {r['layer']} | {r['M']} | {r['bits']} | " + " | ".join(cells)
                     + f" | {r['picked']} | {r['best']} | {r['us'][r['picked']] / r['us'][r['best']]:.2f} "
                     f"| {'yes' if r['bytes_equal'] else '**no**'} |")
    gain = [r["us"]["1x1"] / r["us"][r["picked"]] for r in rows]
    lines += ["", f"1x1 / picked: min {min(gain):.2f}×, median {float(np.median(gain)):.2f}×, max {max(gain):.2f}×; "
              f"outputs equal in {sum(r['bytes_equal'] for r in rows)} of {len(rows)} cases."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--bits", type=int, nargs="+", default=list(BITS))
    ap.add_argument("--quick", action="store_true", help="two layers only (70B o, which takes 2 parts, and 70B down)")
    args = ap.parse_args(argv)
    command = " ".join(["python -m benchmarks.bmma_parts"] + list(sys.argv[1:] if argv is None else argv))
    layers = {k: LAYERS[k] for k in ("70B o", "70B down")} if args.quick else LAYERS
    run(args.out, layers=layers, batches=tuple(args.batch), bits=tuple(args.bits), command=command)


if __name__ == "__main__":
    main()

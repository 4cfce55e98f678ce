"""How many warps should share a 16-row tile's split in the 1-bit kernel?  Every choice, timed side by side.

    python -m benchmarks.bmma_parts --out benchmarks/results      (bcq bench bmma-parts)

``bmma_gemv(..., parts=q)`` lets q warps walk 1/q of each (16-row tile, split)'s steps; the bytes do not
change (checked here for every case against parts = 1).  For every layer of ``benchmarks.gemv.LAYERS``,
batch and precision this times every q the call's variant is compiled for, like ``benchmarks.gemv``
(CUDA-graph replay over weight copies larger than L2), and marks the q that ``gpu.kernels.bmma_parts``
picks, so the table says what that rule costs against the best q.  Every call walks one 16-row tile per
warp (``tiles_per_warp=1``), so the table measures parts alone.

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
        for M in batches:
            choices = kernels.bmma_parts_choices(S, batch_bucket(M))
            x = cupy.asarray(rng.standard_normal((M, K)).astype(np.float16))
            for p in bits:
                picked = kernels.bmma_parts(M, N, K, GROUP, p, contract_split(N, K, GROUP), num_sms)
                ys = {q: cupy.empty((M, N), cupy.float16) for q in choices}

                def call(q):
                    return lambda i: gpu.bmma_gemv(x, tiles[i][:p], alphas[p][i], group_size=GROUP, out=ys[q], parts=q,
                                                   tiles_per_warp=1)
                times = {}
                for q in choices:
                    call(q)(0)
                same = all(bool((ys[q].view(cupy.uint16) == ys[1].view(cupy.uint16)).all()) for q in choices)
                for q in choices:
                    times[q] = time_graph(cupy, call(q), n)
                best = min(times, key=times.get)
                rows.append(dict(layer=name, N=N, K=K, M=M, bits=p, us={str(q): t for q, t in times.items()},
                                 picked=picked, best=best, floor_us=bcq_bytes(N, K, M, p) / bw * 1e6,
                                 bytes_equal=same))
                print(f"{name:12s} M={M} {p}-bit  " + "  ".join(f"parts {q}: {t:6.1f} us" for q, t in times.items())
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
    """One line per case: µs of every parts choice, the rule's pick against the best, byte equality."""
    qs = sorted({int(q) for r in rows for q in r["us"]})
    lines = [f"# bmma_gemv: warps per 16-row tile and split (parts) on {meta['gpu']}", "",
             f"`{meta['command']}` ({meta['date']}), group size {meta['group_size']}, {meta['num_sms']} SMs; "
             "CUDA-graph replay over weight copies larger than L2. *Picked* is `gpu.kernels.bmma_parts`' choice.", "",
             "| layer | M | bits | " + " | ".join(f"parts {q} µs" for q in qs)
             + " | picked | best | picked / best time | outputs equal (bytes) |",
             "|---|---|---|" + "---|" * len(qs) + "---|---|---|---|"]
    for r in rows:
        cells = [f"{r['us'][str(q)]:.1f}" if str(q) in r["us"] else "-" for q in qs]
        lines.append(f"| {r['layer']} | {r['M']} | {r['bits']} | " + " | ".join(cells)
                     + f" | {r['picked']} | {r['best']} | {r['us'][str(r['picked'])] / r['us'][str(r['best'])]:.2f} "
                     f"| {'yes' if r['bytes_equal'] else '**no**'} |")
    gain = [r["us"]["1"] / r["us"][str(r["picked"])] for r in rows]
    lines += ["", f"parts 1 / picked: min {min(gain):.2f}×, median {float(np.median(gain)):.2f}×, max {max(gain):.2f}×; "
              f"outputs equal in {sum(r['bytes_equal'] for r in rows)} of {len(rows)} cases."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--quick", action="store_true", help="two layers only (70B o, which takes 2 parts, and 70B down)")
    args = ap.parse_args(argv)
    command = " ".join(["python -m benchmarks.bmma_parts"] + list(sys.argv[1:] if argv is None else argv))
    layers = {k: LAYERS[k] for k in ("70B o", "70B down")} if args.quick else LAYERS
    run(args.out, layers=layers, batches=tuple(args.batch), command=command)


if __name__ == "__main__":
    main()

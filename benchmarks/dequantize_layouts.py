"""Dequantize from the row-major planes against dequantize from their tile layout, side by side in one run.

    python -m benchmarks.dequantize_layouts --out benchmarks/results/h200
    python -m benchmarks.dequantize_layouts --base /tmp/base --out benchmarks/results/h200   # against a checkout

A model that keeps its planes only in the tile layout (``BCQLinear.use_tile_layout``) serves batches
past 16 as dequantize(tiles) + cuBLAS.  For every layer of ``benchmarks.gemv.LAYERS`` and precision this
times ``gpu.dequantize`` from both layouts (CUDA-graph replay over weight copies larger than L2, as
``benchmarks.gemv``; the row-major time is the faster of two timings around the tiled one) and compares
the two float16 results as bytes.  With ``--base`` (a checkout of this repository, loaded as
``benchmarks.kernel_ab`` does) its ``dequantize`` from the tiles is timed too, around this checkout's
(the base time is the faster of two), and its W joins the byte comparison.  Floor = planes + scales read
and W written, over the measured copy bandwidth.  Results: OUT/dequantize_layouts_<gpu>.json and .md.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from .gemv import (BITS, GROUP, LAYERS, copies_beyond_l2, copy_bandwidth, device_name, gpu_slug, random_weights,
                   save_results, side_by_side_markdown, time_graph)
from .kernel_ab import load_base


def run(out_dir: Path, layers=LAYERS, bits=BITS, command="", base=None):
    """base: another checkout's gpu package (benchmarks.kernel_ab.load_base) or None."""
    import cupy

    import gpu

    rng = np.random.default_rng(0)
    bw = copy_bandwidth(cupy)
    rows = []
    for name, (N, K) in layers.items():
        n = copies_beyond_l2(max(bits) * N * K // 8 + 2 * N * K)
        planes, alphas = random_weights(cupy, rng, N, K, bits, n)
        tiles = [gpu.tile_planes(P) for P in planes]
        w_rows, w_tiles = cupy.empty((N, K), cupy.float16), cupy.empty((N, K), cupy.float16)
        w_base = cupy.empty((N, K), cupy.float16) if base is not None else None
        for p in bits:
            from_rows = lambda i: gpu.dequantize(planes[i][:p], alphas[p][i], group_size=GROUP, out=w_rows)  # noqa: E731
            from_tiles = lambda i: gpu.dequantize(None, alphas[p][i], group_size=GROUP, out=w_tiles,  # noqa: E731
                                                  tiles=tiles[i][:p])
            from_base = lambda i: base.dequantize(None, alphas[p][i], group_size=GROUP, out=w_base,  # noqa: E731
                                                  tiles=tiles[i][:p])
            from_rows(0)
            from_tiles(0)
            same = bool((w_rows.view(cupy.uint16) == w_tiles.view(cupy.uint16)).all())
            row = dict(layer=name, N=N, K=K, bits=p)
            if base is not None:
                from_base(0)
                same = same and bool((w_base.view(cupy.uint16) == w_tiles.view(cupy.uint16)).all())
                row["base_us"] = time_graph(cupy, from_base, n)
            t_rows = time_graph(cupy, from_rows, n)
            t_tiles = time_graph(cupy, from_tiles, n)
            t_rows = min(t_rows, time_graph(cupy, from_rows, n))
            floor = (p * N * K // 8 + 2 * p * N * (K // GROUP) + 2 * N * K) / bw * 1e6
            row.update(rows_us=t_rows, tiles_us=t_tiles, ratio=t_rows / t_tiles, floor_us=floor, bytes_equal=same)
            if base is not None:
                row["base_us"] = min(row["base_us"], time_graph(cupy, from_base, n))
                row["base_ratio"] = row["base_us"] / t_tiles
            rows.append(row)
            vs_base = f"  base {row['base_us']:7.1f} us ({row['base_ratio']:4.2f}x)" if base is not None else ""
            print(f"{name:12s} {p}-bit  rows {t_rows:7.1f} us  tiles {t_tiles:7.1f} us  ({t_rows / t_tiles:4.2f}x)"
                  f"{vs_base}  floor {floor:6.1f}  bytes equal: {same}", flush=True)
        del planes, alphas, tiles, w_rows, w_tiles, w_base
        cupy.get_default_memory_pool().free_all_blocks()
    gpu_name = device_name(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id))
    meta = dict(gpu=gpu_name, copy_bandwidth_Bps=bw, group_size=GROUP, date=time.strftime("%Y-%m-%d"),
                command=command)
    if base is not None:
        meta["base"] = str(Path(base.__file__).parent.parent)
    save_results(out_dir, f"dequantize_layouts_{gpu_slug(gpu_name)}", meta, "rows", rows, markdown(meta, rows))
    return meta, rows


def markdown(meta, rows) -> str:
    if "base" in meta:
        return side_by_side_markdown(
            f"# dequantize: this checkout against {meta['base']} on {meta['gpu']}",
            f"`{meta['command']}` ({meta['date']}); group size {meta['group_size']}; floor = planes + scales + W "
            f"bytes / measured copy bandwidth ({meta['copy_bandwidth_Bps'] / 1e9:.0f} GB/s); base time = faster of "
            "two timings around this checkout's; W equal = the base's, the row-major and the tiled W are the same bytes.",
            ["layer", "bits", "base tiles µs", "tiles µs", "base / new", "row-major µs", "tiles % of floor",
             "W equal (bytes)"],
            [[r["layer"], str(r["bits"]), f"{r['base_us']:.1f}", f"{r['tiles_us']:.1f}", f"{r['base_ratio']:.2f}×",
              f"{r['rows_us']:.1f}", f"{100 * r['floor_us'] / r['tiles_us']:.0f} %",
              "yes" if r["bytes_equal"] else "**no**"] for r in rows],
            [r["base_ratio"] for r in rows], "base / new", [r["bytes_equal"] for r in rows])
    return side_by_side_markdown(
        f"# dequantize: row-major planes against the tile layout on {meta['gpu']}",
        f"`{meta['command']}` ({meta['date']}); group size {meta['group_size']}; floor = planes + scales + W bytes / "
        f"measured copy bandwidth ({meta['copy_bandwidth_Bps'] / 1e9:.0f} GB/s); row-major time = faster of two "
        "timings around the tiled one.",
        ["layer", "bits", "row-major µs", "tiles µs", "row-major / tiles", "tiles % of floor", "W equal (bytes)"],
        [[r["layer"], str(r["bits"]), f"{r['rows_us']:.1f}", f"{r['tiles_us']:.1f}", f"{r['ratio']:.2f}×",
          f"{100 * r['floor_us'] / r['tiles_us']:.0f} %", "yes" if r["bytes_equal"] else "**no**"] for r in rows],
        [r["ratio"] for r in rows], "row-major / tiles", [r["bytes_equal"] for r in rows])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--quick", action="store_true", help="two layers, 2-bit only")
    ap.add_argument("--base", type=Path, help="a checkout of this repository: its dequantize is timed too")
    args = ap.parse_args(argv)
    try:
        base = load_base(args.base) if args.base is not None else None
    except ValueError as e:
        ap.error(str(e))
    layers = {k: LAYERS[k] for k in ("8B o", "70B down")} if args.quick else LAYERS
    run(args.out, layers=layers, bits=(2,) if args.quick else BITS, base=base,
        command="python -m benchmarks.dequantize_layouts " + shlex.join(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()

"""A/B of one GEMV kernel between two checkouts, interleaved in one process, outputs compared byte for byte.

    git worktree add /tmp/base main                       # the baseline's code, any revision
    python -m benchmarks.kernel_ab --base /tmp/base --kernel bmma_gemv --out benchmarks/results/h200

`<base>/gpu` is imported as the package ``gpu_base`` beside this checkout's ``gpu``, its modules compiled
with one more define (``-DBCQ_AB_BASE``, used by no source).  CuPy hands RawModules of the same code and
options one compiled module, kernels and their attributes included, so without it a variant that only
sets a kernel attribute (a shared-memory carveout, say) on an unchanged .cu would set it for the base
too.

For every layer of ``benchmarks.gemv.LAYERS``, batch and precision, both kernels first run once on the
same inputs and their float16 outputs are compared as bytes; then they are timed like
``benchmarks.gemv`` (CUDA-graph replay over weight copies larger than L2) in the order base, this, base,
and the base time is the faster of its two, so drift between the two timings favours the baseline. Both
checkouts share this checkout's ``reference/``.

Results: OUT/kernel_ab_<kernel>_<gpu>.json and .md.
"""
from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from bcq_core import checks
from gpu.kernels import BMMA_MAX_PLANES, IMMA_PLANES

from .gemv import (BITS, GROUP, LAYERS, bcq_bytes, copies_beyond_l2, copy_bandwidth, device_name, gpu_slug,
                   kernel_weights, parse_layer, random_weights, save_results, side_by_side_markdown, time_graph)

BASE_DEFINE = "-DBCQ_AB_BASE"  # keeps the base's compiled modules apart from this checkout's (see above)
KERNELS = ("lut_gemv", "bmma_gemv", "imma_gemm", "mma_gemm")  # same arguments: (x, weights, alpha, group_size, out)
MAX_BITS = min(BMMA_MAX_PLANES, IMMA_PLANES[-1])  # the most planes every kernel of KERNELS takes


def load_base(checkout: Path, name: str = "gpu_base"):
    """Import <checkout>/gpu as the package `name`, its modules compiled apart from this checkout's (BASE_DEFINE);
    ValueError if there is no gpu package there."""
    init = Path(checkout) / "gpu" / "__init__.py"
    if not init.is_file():
        raise ValueError(f"base: {checkout} has no gpu/__init__.py (pass a checkout of this repository)")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module              # its relative imports (from .kernels) resolve through this name
    spec.loader.exec_module(module)
    kernels = module.kernels
    if not hasattr(kernels, "NVRTC_OPTIONS"):
        raise ValueError(f"base: {checkout}/gpu/kernels.py has no NVRTC_OPTIONS, so its modules cannot be kept "
                         "apart from this checkout's (a checkout older than kernel_ab)")
    kernels.NVRTC_OPTIONS = tuple(kernels.NVRTC_OPTIONS) + (BASE_DEFINE,)
    return module


def check_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"kernel: must be one of {KERNELS}, got {kernel!r}")
    return kernel


def check_group_size(group_size: int, layers=LAYERS) -> int:
    """A group size every layer of `layers` takes (bcq_core.checks.check_group_size on each K)."""
    for name, (_, K) in layers.items():
        try:
            checks.check_group_size(name, group_size, K)
        except ValueError as e:
            raise ValueError(f"group_size: must be a positive multiple of 32 dividing every layer's K, "
                             f"got {group_size} ({e})") from None
    return group_size


def run(base, kernel: str, out_dir: Path, layers=LAYERS, batches=(1, 2), bits=BITS, group_size=GROUP, command=""):
    """base: the baseline gpu package (load_base); returns (meta, rows) and writes the JSON and markdown."""
    import cupy

    import gpu

    check_kernel(kernel)
    check_group_size(group_size, layers)
    new_fn, base_fn = getattr(gpu, kernel), getattr(base, kernel)
    rng = np.random.default_rng(0)
    bw = copy_bandwidth(cupy)
    rows = []
    for name, (N, K) in layers.items():
        n = copies_beyond_l2(max(bits) * N * K // 8)
        planes, alphas = random_weights(cupy, rng, N, K, bits, n, g=group_size)
        # each package gets the weights in the layout it reads (bmma_gemv: tiles, where it has them)
        w_base, w_new = kernel_weights(base, kernel, planes), kernel_weights(gpu, kernel, planes)
        for M in batches:
            x = cupy.asarray(rng.standard_normal((M, K)).astype(np.float16))
            y_base, y_new = cupy.empty((M, N), cupy.float16), cupy.empty((M, N), cupy.float16)
            for p in bits:
                def call(fn, weights, out):
                    return lambda i: fn(x, weights[i][:p], alphas[p][i], group_size=group_size, out=out)
                call(base_fn, w_base, y_base)(0)
                call(new_fn, w_new, y_new)(0)
                same = bool((y_base.view(cupy.uint16) == y_new.view(cupy.uint16)).all())
                t_base = time_graph(cupy, call(base_fn, w_base, y_base), n)
                t_new = time_graph(cupy, call(new_fn, w_new, y_new), n)
                t_base = min(t_base, time_graph(cupy, call(base_fn, w_base, y_base), n))
                floor = bcq_bytes(N, K, M, p, g=group_size) / bw * 1e6
                rows.append(dict(layer=name, N=N, K=K, M=M, bits=p, base_us=t_base, new_us=t_new,
                                 speedup=t_base / t_new, floor_us=floor, bytes_equal=same))
                print(f"{name:12s} M={M} {p}-bit  base {t_base:7.1f} us  new {t_new:7.1f} us  "
                      f"({t_base / t_new:4.2f}x)  floor {floor:6.1f}  bytes equal: {same}", flush=True)
        del planes, alphas, w_base, w_new
        cupy.get_default_memory_pool().free_all_blocks()
    gpu_name = device_name(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id))
    base_dir = str(Path(base.__file__).parent.parent)
    meta = dict(gpu=gpu_name, kernel=kernel, base=base_dir, copy_bandwidth_Bps=bw, group_size=group_size,
                date=time.strftime("%Y-%m-%d"), command=command)
    stem = f"kernel_ab_{kernel}_{gpu_slug(gpu_name)}"
    save_results(out_dir, stem, meta, "rows", rows, markdown(meta, rows))
    return meta, rows


def markdown(meta, rows) -> str:
    """The A/B table: µs of both, the speed-up new/base, the share of the bandwidth floor, byte equality."""
    return side_by_side_markdown(
        f"# {meta['kernel']}: this checkout against {meta['base']} on {meta['gpu']}",
        f"`{meta['command']}` ({meta['date']}); floor = bytes / measured copy bandwidth "
        f"({meta['copy_bandwidth_Bps'] / 1e9:.0f} GB/s); group size {meta.get('group_size', GROUP)}; "
        "base time = faster of two timings around the new one.",
        ["layer", "M", "bits", "base µs", "new µs", "base / new", "new % of floor", "outputs equal (bytes)"],
        [[r["layer"], str(r["M"]), str(r["bits"]), f"{r['base_us']:.1f}", f"{r['new_us']:.1f}", f"{r['speedup']:.2f}×",
          f"{100 * r['floor_us'] / r['new_us']:.0f} %", "yes" if r["bytes_equal"] else "**no**"] for r in rows],
        [r["speedup"] for r in rows], "base / new", [r["bytes_equal"] for r in rows])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="a checkout of this repository: its gpu/ is the baseline")
    ap.add_argument("--kernel", default="bmma_gemv", help=f"one of {', '.join(KERNELS)}")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--bits", type=int, nargs="+", default=list(BITS),
                    help=f"precisions to time, 1 to {MAX_BITS} (default: {BITS})")
    ap.add_argument("--group-size", type=int, default=GROUP, help=f"inputs per scale group (default {GROUP})")
    ap.add_argument("--layers", nargs="+", default=list(LAYERS),
                    help="layers of benchmarks.gemv.LAYERS or NxK shapes (default: every layer of LAYERS)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    try:
        check_kernel(args.kernel)
        layers = dict(parse_layer(t) for t in args.layers)
        if any(not 1 <= p <= MAX_BITS for p in args.bits):
            raise ValueError(f"bits: each must be 1 to {MAX_BITS} (the tensor-core kernels take at most "
                             f"{MAX_BITS} planes), got {args.bits}")
        check_group_size(args.group_size, layers)
        base = load_base(args.base)
    except ValueError as e:
        ap.error(str(e))
    command = "python -m benchmarks.kernel_ab " + shlex.join(sys.argv[1:] if argv is None else argv)
    run(base, args.kernel, args.out, layers=layers, batches=tuple(args.batch), bits=tuple(args.bits),
        group_size=args.group_size, command=command)


if __name__ == "__main__":
    main()

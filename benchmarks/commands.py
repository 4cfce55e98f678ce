"""``bcq bench``: the benchmarks of ``benchmarks/``, one subcommand.

    bcq bench [gemv] [--out benchmarks/results] [--quick]   GEMV on a CUDA GPU: cuBLAS FP16 against our kernels
    bcq bench split-sweep [--out ...] [--quick]             the exact contract's split size, swept on a CUDA GPU
    bcq bench bmma-parts [--out ...] [--quick]              the 1-bit kernel's warp shapes (parts x tiles), swept on a CUDA GPU
    bcq bench dequantize-layouts [--out ...] [--quick]      dequantize from the row-major planes and from the tiles
    bcq bench large-batch [--out ...] [--quick]             batches past 16: int8 launches of 16 against dequantize + cuBLAS
    bcq bench model-estimate [--out ...]                    the GEMV table and targets on an H100, from the cost model (CPU)
    bcq bench quantize-speed [--quick]                       the quantizers on one 4096 x 4096 matrix (CPU)
    bcq bench quantize-quality [--quick]                     weight error of every method (CPU)
    bcq bench sim-speed                                      cost-model sweep rate (CPU)

Results land in ``--out`` as JSON + a markdown table; the suite's own module docstring says how it measures.
"""
from __future__ import annotations

import importlib
import sys

SUITES = {  # name: (module, needs a CUDA GPU)
    "gemv": ("benchmarks.gemv", True),
    "split-sweep": ("benchmarks.split_sweep", True),
    "bmma-parts": ("benchmarks.bmma_parts", True),
    "dequantize-layouts": ("benchmarks.dequantize_layouts", True),
    "large-batch": ("benchmarks.large_batch", True),
    "model-estimate": ("benchmarks.model_estimate", False),
    "quantize-speed": ("benchmarks.quantize_speed", False),
    "quantize-quality": ("benchmarks.quantize_quality", False),
    "sim-speed": ("benchmarks.sim_speed", False),
}


def add_parser(subparsers) -> None:
    b = subparsers.add_parser("bench", help="run a benchmark of benchmarks/ (default: GEMV on the GPU)",
                              description=__doc__.splitlines()[0])
    b.add_argument("suite", nargs="?", default="gemv", choices=sorted(SUITES),
                   help="which benchmark (default: gemv, which needs CuPy and a CUDA GPU)")
    b.add_argument("--out", help="results folder (default: benchmarks/results)")
    b.add_argument("--quick", action="store_true", help="a short run (fewer shapes or a smaller matrix)")
    b.set_defaults(func=run)


def run(args) -> int:
    module_name, needs_gpu = SUITES[args.suite]
    if args.suite == "sim-speed" and (args.out or args.quick):
        print("bcq bench sim-speed: error: takes neither --out nor --quick (it prints its table)", file=sys.stderr)
        return 2
    if needs_gpu:
        try:
            import cupy
            cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # ImportError, or CuPy without a driver / device
            print(f"bcq bench {args.suite}: error: needs CuPy and a CUDA GPU ({type(e).__name__}: {e})",
                  file=sys.stderr)
            return 2
    argv = (["--out", args.out] if args.out else []) + (["--quick"] if args.quick else [])
    return int(importlib.import_module(module_name).main(argv) or 0)

"""How fast the cost model prices configurations (the issue asks for >= 100,000 per second).

    python -m benchmarks.sim_speed                 (or: python benchmarks/sim_speed.py)

One vectorised call per method on `n` random (N, K, M, bits) configurations drawn from the
shapes of the models in sim/data/models.toml; the best of `repeats` runs counts (the machine is
shared).  Prints a markdown table and asserts the 100k/s floor.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim import sweep  # noqa: E402
from sim.workload import load_models  # noqa: E402

FLOOR_PER_S = 100_000
# bcq_auto prices every path of ours (bmma and imma where they take the call, LUT, dequantize + cuBLAS)
CASES = (("H100-SXM", "fp16"), ("H100-SXM", "bcq_lut"), ("H100-SXM", "bcq_auto"), ("H100-SXM", "anyprec"),
         ("H100-SXM", "bcq_fixed"), ("H100-SXM", "int4"), ("FIGLUT", None))


def random_configs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    shapes = np.array([(N, K) for cfg in load_models().values() for _, N, K in cfg.linears()], dtype=np.float64)
    pick = shapes[rng.integers(0, len(shapes), n)]
    return pick[:, 0], pick[:, 1], rng.integers(1, 65, n).astype(np.float64), rng.integers(3, 5, n).astype(np.float64)


def measure(n: int = 1_000_000, repeats: int = 3) -> list[tuple[str, str, float]]:
    N, K, M, bits = random_configs(n)
    rows = []
    for device, method in CASES:
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            c = sweep(device, method, N=N, K=K, M=M, bits=None if method == "int4" else bits)
            best = min(best, time.perf_counter() - t0)
        assert c.time_s.shape == (n,) and np.isfinite(c.time_s).all()
        rows.append((device, method or "accelerator", n / best))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="configurations per call")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rows = measure(args.n, args.repeats)
    print(f"| device | method | configurations / s (n = {args.n:,}, best of {args.repeats}) |\n|---|---|---|")
    for device, method, rate in rows:
        print(f"| {device} | {method} | {rate:,.0f} |")
    slowest = min(r for *_, r in rows)
    assert slowest >= FLOOR_PER_S, f"slowest method prices {slowest:,.0f} configurations/s < {FLOOR_PER_S:,}"
    return rows


if __name__ == "__main__":
    main()

"""Repeat the 1-bit kernel under its dependent launch and compare every output with the plain launch's bytes.

    python -m benchmarks.launch_repeat on 200 40 50          # 200 eager calls, a graph of 40 calls replayed 50 times
    compute-sanitizer --tool racecheck python -m benchmarks.launch_repeat on 4 4 2
    compute-sanitizer --tool racecheck python -m benchmarks.launch_repeat off 4 4 2

The shape (2 x 700 x 8960, g = 128, 3 planes with offsets) has 9 contract splits, so every call
also goes through the split-K workspace and its counters.  Prints how many outputs differ.
"""
from __future__ import annotations

import sys

import numpy as np


SHAPE = (2, 700, 128 * 70, 3, 128)  # M, N, K, p, g of the GPU tests' dependent-launch problem: 9 contract splits


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4 or args[0] not in ("on", "off") or not all(a.isdigit() for a in args[1:]):
        raise SystemExit("usage: python -m benchmarks.launch_repeat on|off EAGER GRAPH_CALLS REPLAYS")
    mode, n_eager, n_graph, n_replay = args[0], *map(int, args[1:])

    import cupy

    import gpu
    from bcq_core.random_problems import random_problem
    from gpu import launch
    x, planes, alpha, beta = random_problem(np.random.default_rng(11), *SHAPE, with_beta=True)
    x, alpha, beta = cupy.asarray(x), cupy.asarray(alpha), cupy.asarray(beta)
    tiles = gpu.tile_planes(cupy.asarray(planes))
    stream = cupy.cuda.Stream(non_blocking=True)
    bad = 0
    with stream:
        launch.OVERLAP = False
        plain = cupy.asnumpy(gpu.bmma_gemv(x, tiles, alpha, beta, group_size=128)).view(np.uint16)
        launch.OVERLAP = mode == "on"
        outs = [gpu.bmma_gemv(x, tiles, alpha, beta, group_size=128) for _ in range(n_eager)]
        bad += sum(int((cupy.asnumpy(o).view(np.uint16) != plain).any()) for o in outs)
        out = cupy.empty(plain.shape, dtype=cupy.float16)
        stream.begin_capture()
        for _ in range(n_graph):
            gpu.bmma_gemv(x, tiles, alpha, beta, group_size=128, out=out)
        graph = stream.end_capture()
        for _ in range(n_replay):
            out.fill(0)
            graph.launch(stream)
            stream.synchronize()
            bad += int((cupy.asnumpy(out).view(np.uint16) != plain).any())
    print(mode, "mismatching results:", bad, "of", n_eager + n_replay)
    return int(bad > 0)


if __name__ == "__main__":
    raise SystemExit(main())

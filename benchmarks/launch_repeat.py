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


def problem(rng, M=2, N=700, K=128 * 70, p=3, g=128):
    """x float16 [M, K], planes uint32 [p, N, K/32], alpha float16 [p, N, K/g], beta float16 [N, K/g]."""
    x = rng.standard_normal((M, K)).astype(np.float16)
    planes = rng.integers(0, 2 ** 32, size=(p, N, K // 32), dtype=np.uint64).astype(np.uint32)
    alpha = (np.abs(rng.standard_normal((p, N, K // g))) * 0.02 * 0.5 ** np.arange(p)[:, None, None]).astype(np.float16)
    beta = (rng.standard_normal((N, K // g)) * 0.01).astype(np.float16)
    return x, planes, alpha, beta


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4 or args[0] not in ("on", "off") or not all(a.isdigit() for a in args[1:]):
        raise SystemExit("usage: python -m benchmarks.launch_repeat on|off EAGER GRAPH_CALLS REPLAYS")
    mode, n_eager, n_graph, n_replay = args[0], *map(int, args[1:])

    import cupy

    import gpu
    from gpu import launch
    x, planes, alpha, beta = problem(np.random.default_rng(11))
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

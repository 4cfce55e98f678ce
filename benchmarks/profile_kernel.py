"""Launch one of our kernels once per case, for Nsight Compute:

    ncu --section SpeedOfLight --section WarpStateStats python -m benchmarks.profile_kernel [n_cases] [lut_gemv|bmma_gemv]
"""
import sys

import cupy
import numpy as np

import gpu

CASES = [(1, 4096, 4096, 2), (1, 8192, 28672, 2), (8, 8192, 28672, 2)]
if __name__ == "__main__":
    rng = np.random.default_rng(0)
    kernel = getattr(gpu, sys.argv[2] if len(sys.argv) > 2 else "lut_gemv")
    for M, N, K, p in CASES[: int(sys.argv[1]) if len(sys.argv) > 1 else None]:
        x = cupy.asarray(rng.standard_normal((M, K)).astype(np.float16))
        planes = cupy.asarray(rng.integers(0, 2 ** 32, size=(p, N, K // 32), dtype=np.uint64).astype(np.uint32))
        alpha = cupy.asarray((rng.random((p, N, K // 128)) * 0.01).astype(np.float16))
        weights = gpu.tile_planes(planes) if kernel.__name__ in gpu.kernels.TILED_KERNELS else planes
        for _ in range(2):
            kernel(x, weights, alpha, group_size=128)
        cupy.cuda.Device().synchronize()
        print(M, N, K, p, gpu.launch_geometry(M, N, K, 132))

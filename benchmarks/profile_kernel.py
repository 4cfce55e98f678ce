"""Launch one of our kernels twice per case, for Nsight Compute:

    ncu --section SpeedOfLight --section WarpStateStats python -m benchmarks.profile_kernel [n_cases] [kernel]

kernel: lut_gemv (default), bmma_gemv, imma_gemm or dequantize (W_hat from the tiles of 70B gate+up,
2 then 4 bits: launches 2 and 4 of the kernel are the measured ones), or copy: an elementwise copy of a
float16 array of W_hat's size (70B gate+up), the yardstick for dequantize's L2 and DRAM counters
(ncu -k regex:copy; launch 2 is the measured one).
"""
import sys

import cupy
import numpy as np

import gpu

CASES = [(1, 4096, 4096, 2), (1, 8192, 28672, 2), (8, 8192, 28672, 2)]
DEQUANTIZE_CASES = [(1, 57344, 8192, 2), (1, 57344, 8192, 4)]

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    name = sys.argv[2] if len(sys.argv) > 2 else "lut_gemv"
    if name == "copy":
        _, N, K, _ = DEQUANTIZE_CASES[0]
        src, dst = cupy.empty((N, K), cupy.float16), cupy.empty((N, K), cupy.float16)  # the values do not matter
        copy = cupy.ElementwiseKernel("T x", "T y", "y = x", "copy_w")  # a kernel: copyto would be a memcpy
        for _ in range(2):
            copy(src, dst)
        cupy.cuda.Device().synchronize()
        print(N, K, "copy", src.nbytes, "bytes")
        sys.exit(0)
    kernel = getattr(gpu, name)
    cases = DEQUANTIZE_CASES if name == "dequantize" else CASES
    tiled = name == "dequantize" or name in gpu.kernels.TILED_KERNELS
    for M, N, K, p in cases[: int(sys.argv[1]) if len(sys.argv) > 1 else None]:
        x = cupy.asarray(rng.standard_normal((M, K)).astype(np.float16))
        planes = cupy.asarray(rng.integers(0, 2 ** 32, size=(p, N, K // 32), dtype=np.uint64).astype(np.uint32))
        alpha = cupy.asarray((rng.random((p, N, K // 128)) * 0.01).astype(np.float16))
        weights = gpu.tile_planes(planes) if tiled else planes
        for _ in range(2):
            if name == "dequantize":
                kernel(None, alpha, group_size=128, tiles=weights)
            else:
                kernel(x, weights, alpha, group_size=128)
        cupy.cuda.Device().synchronize()
        print(M, N, K, p, gpu.launch_geometry(M, N, K, 132))

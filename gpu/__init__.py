"""CUDA kernels for multi-precision BCQ (CuPy RawModule); see gpu/kernels.py and docs/kernels.md.

Importing this package needs no GPU; calling a kernel needs CuPy and a CUDA device.
"""
from .kernels import (bcq_matmul, bmma_gemv, dequantize, imma_gemm, launch_geometry, lut_gemv, mma_gemm,
                      tile_planes, torch_stream)

__all__ = ["bcq_matmul", "bmma_gemv", "dequantize", "imma_gemm", "launch_geometry", "lut_gemv", "mma_gemm",
           "tile_planes", "torch_stream"]

r"""Dequantization, the exact arithmetic of gpu/dequantize.cu.

    W_hat[n, k] = fp16( (((alpha_0 b_0) + alpha_1 b_1) + ...) + alpha_{p-1} b_{p-1} [+ beta] )

float32 throughout (alpha_i b_i is alpha_i with its sign flipped where the bit is clear: exact),
one rounding per addition, offsets added last, then rounded to float16 (nearest even).
planes uint32 [p, N, K/32]; alpha float16 [p, N, G]; beta float16 [N, G] or None -> float16 [N, K].
"""
from __future__ import annotations

import numpy as np

from bcq_core.layout import unpack_bits


def dequantize_fp16(planes, alpha, beta=None, *, group_size: int) -> np.ndarray:
    p, N, KW = planes.shape
    K = KW * 32
    if alpha.shape != (p, N, K // group_size):
        raise ValueError(f"alpha: must be {(p, N, K // group_size)}, got {alpha.shape}")
    signs = unpack_bits(planes).astype(np.float32)  # [p, N, K], +-1
    a = np.repeat(alpha.astype(np.float32), group_size, axis=-1)  # [p, N, K]
    w = a[0] * signs[0]
    for i in range(1, p):
        w = w + a[i] * signs[i]
    if beta is not None:
        w = w + np.repeat(beta.astype(np.float32), group_size, axis=-1)
    return w.astype(np.float16)

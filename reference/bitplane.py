r"""Two float64 formulations of y = x W_hat^T, for agreement checks (not bit-exact contracts).

dequant_matmul:   y = x @ W_hat^T with W_hat = beta + sum_i alpha_i B_i           (dequantize, then matmul)
bitplane_gemv:    y[m, n] = sum_G ( beta[n,G] sum_{k in G} x[m,k] + sum_i alpha_i[n,G] (B_i[n, G] . x[m, G]) )
                                                                                    (one dot product per plane and group)
x [M, K]; planes uint32 [p, N, K/32]; alpha [p, N, G]; beta [N, G] or None -> float64 [M, N].
"""
from __future__ import annotations

import numpy as np

from bcq_core.bcq import dequantize
from bcq_core.layout import unpack_bits


def dequant_matmul(x, planes, alpha, beta=None, *, group_size: int) -> np.ndarray:
    signs = unpack_bits(planes)
    W = dequantize(signs, alpha.astype(np.float64), group_size, None if beta is None else beta.astype(np.float64))
    return np.asarray(x, np.float64) @ W.astype(np.float64).T


def bitplane_gemv(x, planes, alpha, beta=None, *, group_size: int) -> np.ndarray:
    p, N, KW = planes.shape
    K, g = KW * 32, group_size
    x = np.asarray(x, np.float64).reshape(-1, K // g, g)  # [M, G, g]
    signs = unpack_bits(planes).astype(np.float64).reshape(p, N, K // g, g)
    dots = np.einsum("inGg,mGg->imnG", signs, x)  # B_i . x per plane and group
    y = np.einsum("inG,imnG->mn", alpha.astype(np.float64), dots)
    if beta is not None:
        y += np.einsum("nG,mG->mn", beta.astype(np.float64), x.sum(-1))
    return y

r"""Round-to-nearest (RTN) uniform quantization per group, asymmetric min/max: the plainest baseline.

For each group of g consecutive weights of one row (lo = min, hi = max of the group):

    s = (hi − lo) / (2^b − 1),   q = clip(round((w − lo) / s), 0, 2^b − 1),   ŵ = lo + s q

A b-bit uniform grid is exactly an asymmetric BCQ: write q = Σ_{j<b} 2^j c_j with c_j = (B_j + 1)/2,
B_j ∈ {−1, +1}, then

    ŵ = [lo + s (2^b − 1)/2] + Σ_j (s 2^{j−1}) B_j   =   β + Σ_j α_j B_j

so ``rtn_bcq`` returns a one-precision ``BCQ`` (planes most significant first, α_j = s 2^{b−2−j}
for plane j, β = lo + s(2^b − 1)/2) that the same packed format, kernels and ``BCQLinear`` serve.
Shapes: W [N, K] -> signs int8 [b, N, K], alpha {b: [b, N, G]}, beta {b: [N, G]}, G = K / g.
"""
from __future__ import annotations

import numpy as np

from .bcq import BCQ
from .checks import check_group_size, check_matrix


def _grid(W: np.ndarray, bits: int, g: int):
    """(q int [N, G, g], lo [N, G], s [N, G]) of the uniform min/max grid of every group."""
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"bits: must be an int in 1..8, got {bits!r}")
    N, K = W.shape
    Wg = W.reshape(N, K // g, g)                                     # (N, G, g)
    lo, hi = Wg.min(-1), Wg.max(-1)                                  # (N, G)
    levels = 2 ** bits - 1
    s = (hi - lo) / levels
    safe = np.where(s > 0, s, 1.0)
    q = np.clip(np.rint((Wg - lo[..., None]) / safe[..., None]), 0, levels).astype(np.int32)
    return q, lo, s


def rtn_dequantize(W, bits: int, group_size: int) -> np.ndarray:
    """ŵ = lo + s q for every group: float32 [N, K]."""
    W = check_matrix("W", W)
    g = check_group_size("group_size", group_size, W.shape[1])
    q, lo, s = _grid(W, bits, g)
    return (lo[..., None] + s[..., None] * q).reshape(W.shape).astype(np.float32)


def rtn_bcq(W, bits: int, group_size: int) -> BCQ:
    """The RTN grid as an asymmetric one-precision BCQ (see the module docstring)."""
    W = check_matrix("W", W)
    g = check_group_size("group_size", group_size, W.shape[1])
    N, K = W.shape
    q, lo, s = _grid(W, bits, g)
    j = np.arange(bits - 1, -1, -1)                                  # plane 0 holds bit b-1 (MSB)
    c = (q[None] >> j[:, None, None, None]) & 1                       # (b, N, G, g) in {0, 1}
    signs = (2 * c - 1).astype(np.int8).reshape(bits, N, K)
    alpha = (s[None] * 2.0 ** (j[:, None, None] - 1)).astype(np.float32)  # (b, N, G)
    beta = (lo + s * (2 ** bits - 1) / 2).astype(np.float32)         # (N, G)
    return BCQ(signs=signs, alpha={bits: alpha}, group_size=g, beta={bits: beta},
               meta={"method": "rtn", "bits": bits})

r"""Per-weight codes: the form the quantizers work in, and the objective they minimise.

A weight's P planes are P bits of one small integer, its *code*:

    code[n, k] = sum_i [B_i[n, k] = +1] * 2^i          uint8 [N, K]   (P <= 8)

so plane i of code c is s_i(c) = +1 if bit i of c is set, else -1 (bit 1 -> +1, as in the packed
layout), and the first p planes of a code are its low p bits, ``c & (2^p - 1)``.  One group
(row n, inputs k in [j g, (j+1) g)) at precision p has 2^p *levels*

    L_p[c] = beta + sum_{i < p} alpha_i s_i(c),        c in [0, 2^p)

and W_hat[n, k] = L_p[code[n, k] & (2^p - 1)].  Every quantizer here minimises, group by group,
the importance-weighted squared error

    E_p = sum_k d_k (w_k - L_p[c_k])^2,                 d [K] >= 0 (all ones without importance)

Working on codes rather than +-1 planes keeps a group's state in g bytes and turns the normal
equations into a 2^p-bin histogram (``bcq_core.lstsq``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

MAX_PLANES = 8  # a code is one uint8


def signs_to_codes(signs: np.ndarray) -> np.ndarray:
    """int8 +-1 signs [p, N, K] -> uint8 codes [N, K] (bit i = plane i is +1)."""
    p = signs.shape[0]
    if p > MAX_PLANES:
        raise ValueError(f"signs: at most {MAX_PLANES} planes fit a uint8 code, got {p}")
    codes = np.zeros(signs.shape[1:], dtype=np.uint8)
    for i in range(p):
        codes |= (signs[i] > 0).astype(np.uint8) << np.uint8(i)
    return codes


def codes_to_signs(codes: np.ndarray, P: int) -> np.ndarray:
    """uint8 codes [N, K] -> int8 +-1 signs [P, N, K] (inverse of ``signs_to_codes``)."""
    signs = np.empty((P,) + codes.shape, dtype=np.int8)
    for i in range(P):
        signs[i] = ((codes >> np.uint8(i)) & np.uint8(1)).astype(np.int8) * 2 - 1
    return signs


def group_importance(importance, K: int, g: int) -> np.ndarray:
    """d float64 [K]: the importance, or ones; a group whose importance sums to 0 gets ones.

    Such a group's weighted error is 0 whatever its codes and scales, so every answer is optimal;
    ones pick the plain least-squares one, which keeps the weights usable if the importance was
    estimated on too little data.
    """
    if importance is None:
        return np.ones(K, dtype=np.float64)
    d = np.array(importance, dtype=np.float64).reshape(K // g, g)  # (G, g)
    d[d.sum(axis=1) == 0] = 1.0
    return d.reshape(K)


@njit(cache=True)
def levels(alpha, beta, p, L):
    """L[c] = beta + sum_{i<p} alpha[i] s_i(c) for c < 2^p, by doubling: L[c + 2^i] = L[c] + 2 alpha_i."""
    L[0] = beta
    for i in range(p):
        L[0] -= alpha[i]
    n = 1
    for i in range(p):
        step = 2.0 * alpha[i]
        for c in range(n):
            L[c + n] = L[c] + step
        n *= 2


@njit(cache=True)
def weighted_sse(w, d, codes, mask, L):
    """E = sum_k d_k (w_k - L[codes_k & mask])^2 over one group."""
    e = 0.0
    for k in range(w.size):
        r = w[k] - L[codes[k] & mask]
        e += d[k] * r * r
    return e


def objective(W, signs, alpha, g, importance=None, beta=None) -> float:
    """sum_{n,k} d_k (W - W_hat)^2 in float64 for signs [p, N, K], alpha [p, N, G], beta [N, G] or None.

    Uses exactly the scales given (pass fp16-rounded ones to score a packed file).
    """
    p, N, K = signs.shape
    W_hat = (alpha.astype(np.float64)[..., None] * signs.reshape(p, N, K // g, g)).sum(axis=0)  # (N, G, g)
    if beta is not None:
        W_hat = W_hat + beta.astype(np.float64)[..., None]
    R = np.asarray(W, dtype=np.float64) - W_hat.reshape(N, K)
    d = np.ones(K) if importance is None else np.asarray(importance, dtype=np.float64)
    return float((R * R * d).sum())

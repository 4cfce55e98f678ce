r"""Any-Precision LLM (Park et al., ICML 2024): nested non-uniform codebooks per row, the multi-precision baseline.

Per output row n (no groups), with sensitivity weights F[n, k] >= 0 (the Fisher diagonal: squared
gradients of the loss on calibration text; uniform when none are given):

1. Seed (b₀ bits, paper: 3): weighted 1-D k-means with 2^b₀ clusters (``iters`` Lloyd rounds, paper: 50),
   minimising Σ_k F[n,k] (W[n,k] − c[code_k])².
2. Upscale b → b+1: every cluster c is split in two by the optimal weighted 1-D 2-means of its members
   (children 2c = lower values, 2c+1 = higher), so a b-bit code is the top b bits of the (b+1)-bit code
   and one stored code per weight serves every precision: code_b = code_top >> (top − b).
3. Each precision b keeps its own table of 2^b centroids per row (weighted means of its clusters).

In 1-D both steps act on the sorted row: a cluster is a contiguous range of the sorted values, so with
prefix sums S0 = ΣF, S1 = ΣF·w, S2 = ΣF·w² a cluster's centroid is S1/S0 and its cost S2 − S1²/S0; a
Lloyd round is a binary search of the midpoints (O(2^b log K)), the exact 2-means split a scan (O(K)).

Shapes: W [N, K] -> codes uint8 [N, K] (top-precision codes), centroids {b: float32 [N, 2^b]}.
The levels are not BCQ-representable (2^b free values vs b + 1 BCQ scales), so models use
``AnyPrecision.dequantize(b)``; storage per precision is b bits per weight + 2^b fp16 per row.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from .checks import check_matrix


@dataclass
class AnyPrecision:
    """Nested codebook quantization of one [N, K] matrix (see the module docstring)."""

    codes: np.ndarray                      # uint8 [N, K], codes of the top precision
    centroids: dict[int, np.ndarray]       # {b: float32 [N, 2^b]}, ascending along the last axis
    top_bits: int
    meta: dict = field(default_factory=dict)

    @property
    def precisions(self) -> tuple[int, ...]:
        return tuple(sorted(self.centroids))

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    def code(self, b: int) -> np.ndarray:
        """b-bit codes: the top b bits of the stored code, uint8 [N, K]."""
        self._check(b)
        return self.codes >> (self.top_bits - b)

    def dequantize(self, b: int) -> np.ndarray:
        """Ŵ_b[n, k] = centroids[b][n, code_b[n, k]]: float32 [N, K]."""
        self._check(b)
        return np.take_along_axis(self.centroids[b], self.code(b).astype(np.intp), axis=1)

    def nbytes(self, b: int | None = None) -> int:
        """Bytes to serve precision b (b code bits per weight + fp16 table), or all stored (None)."""
        N, K = self.shape
        if b is None:
            return N * K * self.top_bits // 8 + sum(2 * N * 2 ** q for q in self.precisions)
        self._check(b)
        return N * K * b // 8 + 2 * N * 2 ** b

    def _check(self, b):
        if b not in self.centroids:
            raise ValueError(f"b: this quantization stores precisions {list(self.precisions)}, not {b}")


@numba.njit(cache=True)
def _range_stats(S0, S1, lo, hi):
    w = S0[hi] - S0[lo]
    return w, (S1[hi] - S1[lo]) / w if w > 0 else np.nan


@numba.njit(cache=True)
def _kmeans_row(x, S0, S1, k, iters):
    """Weighted Lloyd on sorted x; returns the k + 1 cluster boundaries (indices into x)."""
    K = x.shape[0]
    total = S0[K]
    bounds = np.empty(k + 1, np.int64)
    # seed: weighted quantiles, clusters of (about) equal total weight
    for j in range(k + 1):
        bounds[j] = np.searchsorted(S0, total * j / k) if 0 < j < k else (0 if j == 0 else K)
    c = np.empty(k)
    for it in range(iters + 1):
        prev = np.nan
        for j in range(k):                  # update: centroid = weighted mean of the range
            lo, hi = bounds[j], bounds[j + 1]
            if hi > lo:
                w, m = _range_stats(S0, S1, lo, hi)
                c[j] = m if w > 0 else 0.5 * (x[lo] + x[hi - 1])
            else:
                c[j] = prev if not np.isnan(prev) else x[min(lo, K - 1)]
            prev = c[j]
        if it == iters:
            break
        changed = False
        for j in range(1, k):               # assign: boundary at the midpoint of neighbouring centroids
            b = np.searchsorted(x, 0.5 * (c[j - 1] + c[j]))
            b = min(max(b, bounds[j - 1]), K)
            if b != bounds[j]:
                changed = True
            bounds[j] = b
        for j in range(1, k + 1):
            bounds[j] = max(bounds[j], bounds[j - 1])
        if not changed:
            break
    return bounds


@numba.njit(cache=True)
def _cost(S0, S1, S2, lo, hi):
    """Σ F (w − mean)² over the sorted range [lo, hi)."""
    w = S0[hi] - S0[lo]
    s1 = S1[hi] - S1[lo]
    return (S2[hi] - S2[lo]) - (s1 * s1 / w if w > 0 else 0.0)


@numba.njit(cache=True)
def _split(S0, S1, S2, lo, hi):
    """Index t in [lo, hi] minimising cost[lo, t) + cost[t, hi) (exact weighted 2-means of a sorted range)."""
    if hi - lo < 2:
        return hi
    best, best_t = np.inf, lo + 1
    for t in range(lo + 1, hi):
        cost = _cost(S0, S1, S2, lo, t) + _cost(S0, S1, S2, t, hi)
        if cost < best:
            best, best_t = cost, t
    return best_t


@numba.njit(parallel=True, cache=True)
def _quantize_rows(W, F, seed_bits, top_bits, iters, codes, cents):
    N, K = W.shape
    for n in numba.prange(N):
        order = np.argsort(W[n], kind="mergesort")
        x = W[n][order].astype(np.float64)
        f = F[n][order].astype(np.float64)
        S0 = np.zeros(K + 1)
        S1 = np.zeros(K + 1)
        S2 = np.zeros(K + 1)
        for i in range(K):
            S0[i + 1] = S0[i] + f[i]
            S1[i + 1] = S1[i] + f[i] * x[i]
            S2[i + 1] = S2[i] + f[i] * x[i] * x[i]
        bounds = _kmeans_row(x, S0, S1, 2 ** seed_bits, iters)
        for b in range(seed_bits, top_bits + 1):
            k = 2 ** b
            if b > seed_bits:                       # split every parent range in two: children 2c, 2c+1
                nb = np.empty(k + 1, np.int64)
                for c in range(k // 2):
                    nb[2 * c] = bounds[c]
                    nb[2 * c + 1] = _split(S0, S1, S2, bounds[c], bounds[c + 1])
                nb[k] = K
                bounds = nb
            prev = x[0]
            for c in range(k):
                lo, hi = bounds[c], bounds[c + 1]
                if hi > lo:
                    w, m = _range_stats(S0, S1, lo, hi)
                    prev = m if w > 0 else 0.5 * (x[lo] + x[hi - 1])
                cents[b - seed_bits, n, c] = prev   # an empty child copies its sibling
        for c in range(2 ** top_bits):
            for i in range(bounds[c], bounds[c + 1]):
                codes[n, order[i]] = c


def anyprec_quantize(W, weights=None, seed_bits: int = 3, top_bits: int = 4, iters: int = 50) -> AnyPrecision:
    """Any-Precision LLM quantization of W [N, K] for precisions seed_bits..top_bits (see module docstring).

    weights: float [N, K] sensitivities (Fisher diagonal), or None for plain (unweighted) k-means.
    """
    W = check_matrix("W", W)
    if not (isinstance(seed_bits, int) and isinstance(top_bits, int) and 1 <= seed_bits <= top_bits <= 8):
        raise ValueError(f"seed_bits, top_bits: need 1 <= seed_bits <= top_bits <= 8, got {seed_bits}, {top_bits}")
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters: must be a non-negative int, got {iters!r}")
    if weights is None:
        F = np.ones_like(W)
    else:
        F = check_matrix("weights", weights)
        if F.shape != W.shape:
            raise ValueError(f"weights: shape must equal W's {W.shape}, got {F.shape}")
        if (F < 0).any():
            raise ValueError("weights: must be non-negative")
        F = F + 1e-12 * max(float(F.max()), 1e-30)  # an all-zero row still gets plain k-means
    N, K = W.shape
    codes = np.zeros((N, K), np.uint8)
    cents = np.zeros((top_bits - seed_bits + 1, N, 2 ** top_bits), np.float64)
    _quantize_rows(W, F, seed_bits, top_bits, iters, codes, cents)
    centroids = {b: cents[b - seed_bits, :, :2 ** b].astype(np.float32) for b in range(seed_bits, top_bits + 1)}
    return AnyPrecision(codes=codes, centroids=centroids, top_bits=top_bits,
                        meta={"method": "anyprec", "seed_bits": seed_bits, "iters": iters,
                              "weighted": weights is not None})

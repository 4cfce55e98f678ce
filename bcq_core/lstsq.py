r"""Least-squares scales for every group at once, given its planes.

For one group (row n, inputs k in [j g, (j+1) g)) with planes B [p, g] of +-1, weights w [g] and
importance d [g] >= 0, the scales (and the offset beta when asymmetric) solve

    min_{alpha, beta}  sum_k d_k (w_k - beta - sum_{i<p} alpha_i B_ik)^2

whose normal equations, with the design X = [B^T | 1] (g x (p+1); the ones column only when
asymmetric, m = p or p + 1 unknowns), are

    (X^T D X) x = X^T D w,        x = [alpha_0 .. alpha_{p-1} (, beta)]           (m x m)

Histogram form.  With codes c_k (``bcq_core.codes``), X^T D X and X^T D w depend on the data only
through two histograms over the 2^p codes,

    h0[c] = sum_{k: c_k = c} d_k,      h1[c] = sum_{k: c_k = c} d_k w_k

    (X^T D X)_ij = sum_c h0[c] s_i(c) s_j(c),      (X^T D w)_i = sum_c h1[c] s_i(c)

(s_p(c) = 1 for the offset), so a group costs g additions plus 2^p m^2 / 2, not g m^2 / 2.

Singular systems (a constant or all-zero group, two equal planes, p above the number of distinct
values, d zero where planes differ) are solved by an LDL^T factorisation that drops every column
whose pivot is below ``PIVOT_RTOL`` times the diagonal (every diagonal entry is the same
S = sum_k d_k, since the planes are +-1).  A dropped column gets a zero scale and the others solve
the reduced system, which is a least-squares solution of the full one: finite, never NaN, and exact
reconstruction whenever the group lies in the span of its planes.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .checks import check_group_size
from .codes import MAX_PLANES, group_importance, signs_to_codes

PIVOT_RTOL = 1e-10  # pivot / S below this: the column is (numerically) a combination of earlier ones


@njit(cache=True)
def code_histogram(w, d, codes, mask, h0, h1):
    """h0[c] = sum d_k, h1[c] = sum d_k w_k over the weights whose code & mask is c."""
    h0[:mask + 1] = 0.0
    h1[:mask + 1] = 0.0
    for k in range(w.size):
        c = codes[k] & mask
        h0[c] += d[k]
        h1[c] += d[k] * w[k]


@njit(cache=True)
def fold_histogram(h, p, out):
    """out[c'] = sum of h[c] over the c whose low p bits are c' (h over 2^P codes, P >= p)."""
    mask = (1 << p) - 1
    out[:mask + 1] = 0.0
    for c in range(h.size):
        out[c & mask] += h[c]


@njit(cache=True)
def normal_equations(h0, h1, p, offset, A, b):
    """A = X^T D X, b = X^T D w (m = p + offset unknowns) from the histograms over 2^p codes."""
    m = p + offset
    A[:m, :m] = 0.0
    b[:m] = 0.0
    for c in range(1 << p):
        if h0[c] == 0.0:
            continue  # no weight has this code
        for i in range(m):
            si = 1.0 if i == p or (c >> i) & 1 else -1.0  # s_p = 1: the offset's column
            b[i] += si * h1[c]
            for j in range(i, m):
                sj = 1.0 if j == p or (c >> j) & 1 else -1.0
                A[i, j] += si * sj * h0[c]
    for i in range(m):
        for j in range(i):
            A[i, j] = A[j, i]


@njit(cache=True)
def solve_psd(A, b, m, x):
    """x = a least-squares solution of A x = b for PSD A [m, m]; A is overwritten by its factors.

    LDL^T in place (L below the diagonal, D on it), a column dropped (L[:, j] = 0, D_j = 0, x_j = 0)
    when its pivot is below PIVOT_RTOL * A[0, 0].  No allocation: this runs once per group and round.
    """
    tol = PIVOT_RTOL * max(A[0, 0], 1e-300)
    for j in range(m):
        dj = A[j, j]
        for k in range(j):
            dj -= A[j, k] * A[j, k] * A[k, k]
        if dj <= tol:  # column j is a combination of columns < j
            A[j, j] = 0.0
            for i in range(j + 1, m):
                A[i, j] = 0.0
            continue
        A[j, j] = dj
        for i in range(j + 1, m):
            v = A[i, j]
            for k in range(j):
                v -= A[i, k] * A[j, k] * A[k, k]
            A[i, j] = v / dj
    for i in range(m):  # L z = b, z kept in x (a dropped row's z is never used)
        v = b[i]
        for k in range(i):
            v -= A[i, k] * x[k]
        x[i] = v
    for i in range(m - 1, -1, -1):  # L^T x = D^+ z
        if A[i, i] == 0.0:
            x[i] = 0.0
            continue
        v = x[i] / A[i, i]
        for k in range(i + 1, m):
            v -= A[k, i] * x[k]
        x[i] = v


@njit(cache=True)
def group_lstsq(w, d, codes, p, offset, h0, h1, A, b, x):
    """Scales of one group: x[:p] = alpha, x[p] = beta when offset (scratch h0, h1, A, b passed in)."""
    mask = (1 << p) - 1
    code_histogram(w, d, codes, mask, h0, h1)
    normal_equations(h0, h1, p, offset, A, b)
    solve_psd(A, b, p + offset, x)


@njit(parallel=True, cache=True)
def _lstsq_all(W, d, codes, p, g, offset, alpha, beta):
    N, K = W.shape
    for n in prange(N):
        h0, h1 = np.empty(1 << p), np.empty(1 << p)
        A, b, x, w = np.empty((p + 1, p + 1)), np.empty(p + 1), np.empty(p + 1), np.empty(g)
        for j in range(K // g):
            lo = j * g
            w[:] = W[n, lo:lo + g]
            group_lstsq(w, d[lo:lo + g], codes[n, lo:lo + g], p, offset, h0, h1, A, b, x)
            alpha[n, j, :] = x[:p]
            if offset:
                beta[n, j] = x[p]


def lstsq_scales(signs, W, g, importance=None, offset=False):
    """Least-squares scales of every group: (alpha float64 [p, N, G], beta float64 [N, G] or None).

    signs: +-1 [p, N, K] (p <= 8); W: float [N, K]; g divides K; importance: d [K] >= 0 or None
    (a group whose d sums to 0 is fitted unweighted); offset: also solve the per-group beta.
    """
    signs = np.asarray(signs)
    W = np.ascontiguousarray(W, dtype=np.float32)
    if signs.ndim != 3 or signs.shape[1:] != W.shape:
        raise ValueError(f"signs: must be [p, N, K] with (N, K) = {W.shape}, got {signs.shape}")
    p, (N, K) = signs.shape[0], W.shape
    if not 1 <= p <= MAX_PLANES:
        raise ValueError(f"signs: must hold 1..{MAX_PLANES} planes, got {p}")
    check_group_size("g", g, K)
    if importance is not None and np.shape(importance) != (K,):
        raise ValueError(f"importance: must have shape ({K},), got {np.shape(importance)}")
    alpha, beta = lstsq_codes(W, group_importance(importance, K, g), signs_to_codes(signs), p, g, offset)
    return alpha.transpose(2, 0, 1).copy(), (beta if offset else None)


def lstsq_codes(W, d, codes, p, g, offset=False):
    """The same from codes: planes 0..p-1 of codes uint8 [N, K], d float64 [K] (``codes.group_importance``).

    Returns (alpha float64 [N, G, p], beta float64 [N, G], zeros unless offset): the quantizers' layout.
    """
    N, K = W.shape
    alpha, beta = np.zeros((N, K // g, p)), np.zeros((N, K // g))
    _lstsq_all(np.ascontiguousarray(W, dtype=np.float32), d, codes, p, g, int(bool(offset)), alpha, beta)
    return alpha, beta

r"""Joint multi-precision refinement (beyond the paper): re-choose every code against all precisions.

AnyBCQ's expansion freezes the low planes, so they stay optimal for p_low bits only.  Here the P
planes stay shared but every weight's whole P-bit code is re-chosen against every precision at once.
Per group, with precisions p in bits, weights lambda_p >= 0 (default all 1) and L_p the p-bit levels:

    J = sum_{p in bits} lambda_p E_p,        E_p = sum_k d_k (w_k - L_p[c_k & (2^p - 1)])^2

Descent (``descend_group``), T rounds of

    (a) codes:  c_k <- argmin_{c < 2^P} sum_p lambda_p (w_k - L_p[c])^2        (all scales fixed)
    (b) scales: alpha^(p), beta^(p) <- least squares given the new codes, for every p (bcq_core.lstsq)

a round kept only if J went down (the first that does not ends the loop).  Step (a) costs P
comparisons per weight: sum_p lambda_p (w - L_p[c])^2 = Lambda w^2 - 2 a_c w + c0_c with
a_c = sum_p lambda_p L_p[c], c0_c = sum_p lambda_p L_p[c]^2 and Lambda = sum_p lambda_p, so the best
code is the lowest of the 2^P lines c0_c - 2 a_c w: the lower envelope and search of
``bcq_core.alternating``.  The importance d_k scales every candidate of weight k alike: it does not
enter step (a).

The method (``joint``), per group:

    S0 = the progressive (AnyBCQ) solution
    S1 = the fixed P-bit solution, its lower precisions' scales by least squares on its leading planes
    A, B = descend(S0), descend(S1)
    keep argmin_{c in {S0, A, B}, J_c <= J_S0}  J_c + mu E_low,c
    if mu > 0:  A', B' = descend(S0), descend(S1) under lambda_low + mu; pick again among all five

A descent from S0 alone stalls in S0's basin (it closed 0.31-0.44 of the 4-bit gap in
benchmarks/results/quantize_quality.md against 0.39-0.67 with both starts); S1 starts where P bits
are good and p_low bits are not, and the pick keeps whichever is better for each group.

mu = 0 unless ``keep_low`` is set and the picks would raise the matrix's p_low error
sum_groups E_low above the progressive one; then mu is the smallest multiplier that keeps it there
(bisection), and a second descent under lambda_low + mu (the Lagrangian of "min J subject to no
p_low loss") supplies candidates made for that trade.  So, by construction, every group's J is at
most its progressive J, and with keep_low the matrix's p_low error does not grow.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .alternating import assign, envelope, fit, workspace
from .anybcq import progressive
from .codes import group_importance, levels, objective, weighted_sse
from .lstsq import fold_histogram, lstsq_codes, normal_equations, solve_psd


@njit(cache=True)
def group_errors(w, d, codes, bits, lam, X, P, L):
    """(J, E_low) of one group; X [nb, P + 1] holds alpha^(p) in X[b, :p] and beta^(p) in X[b, P]."""
    J, E_low = 0.0, 0.0
    for b in range(bits.size):
        p = bits[b]
        levels(X[b], X[b, P], p, L)
        e = weighted_sse(w, d, codes, (1 << p) - 1, L)
        J += lam[b] * e
        if b == 0:
            E_low = e
    return J, E_low


@njit(cache=True)
def descend_group(w, d, P, bits, lam, iters, offset, codes, X, ws, new_X, folded):
    """Joint descent of one group's codes (uint8 [g], P bits) and scales X [nb, P + 1], in place.

    ws: ``alternating.workspace(P, g)``; new_X: scratch like X; folded: scratch [2, 2^P].
    """
    H0, H1, A, rhs, a, c0, breaks, hull, order, _, _, new_codes, x = ws
    h0, h1 = folded[0], folded[1]
    n, full = 1 << P, (1 << P) - 1
    L = breaks  # the levels are used up before the envelope writes its breakpoints: share the buffer
    J = group_errors(w, d, codes, bits, lam, X, P, L)[0]
    for t in range(iters):
        a[:] = 0.0  # (a) the line of each of the 2^P codes
        c0[:] = 0.0
        for b in range(bits.size):
            p = bits[b]
            levels(X[b], X[b, P], p, L)
            for c in range(n):
                v = L[c & ((1 << p) - 1)]
                a[c] += lam[b] * v
                c0[c] += lam[b] * v * v
        m = envelope(a, c0, n, order, hull, breaks)
        new_codes[:] = codes
        if not assign(w, hull, breaks, m, n, ~full, new_codes):
            break  # codes optimal for these scales, which are optimal for these codes
        H0[:] = 0.0  # (b) one histogram over the 2^P codes, folded to 2^p bins per precision
        H1[:] = 0.0
        for k in range(w.size):
            H0[new_codes[k]] += d[k]
            H1[new_codes[k]] += d[k] * w[k]
        for b in range(bits.size):
            p = bits[b]
            fold_histogram(H0, p, h0)
            fold_histogram(H1, p, h1)
            normal_equations(h0, h1, p, offset, A, rhs)
            solve_psd(A, rhs, p + offset, x)
            new_X[b, :] = 0.0
            new_X[b, :p] = x[:p]
            if offset:
                new_X[b, P] = x[p]
        J_new = group_errors(w, d, new_codes, bits, lam, new_X, P, L)[0]
        if not J_new < J:
            break
        J = J_new
        codes[:] = new_codes
        X[:] = new_X
    return J


@njit(parallel=True, cache=True)
def _descend_all(W, d, codes, bits, lam, g, iters, offset, X):
    N, K = W.shape
    P = bits[-1]
    for n in prange(N):
        ws = workspace(P, g)
        w, new_X, folded = ws[9], np.empty(X.shape[2:]), np.empty((2, 1 << P))
        for j in range(K // g):
            lo = j * g
            w[:] = W[n, lo:lo + g]
            descend_group(w, d[lo:lo + g], P, bits, lam, iters, offset, codes[n, lo:lo + g], X[n, j], ws, new_X,
                          folded)


@njit(parallel=True, cache=True)
def _errors_all(W, d, codes, bits, lam, g, X, J, E_low):
    N, K = W.shape
    for n in prange(N):
        L, w = np.empty(1 << bits[-1]), np.empty(g)
        for j in range(K // g):
            lo = j * g
            w[:] = W[n, lo:lo + g]
            J[n, j], E_low[n, j] = group_errors(w, d[lo:lo + g], codes[n, lo:lo + g], bits, lam, X[n, j], bits[-1], L)


def _to_X(alphas, betas, bits):
    """{p: [N, G, p]}, {p: [N, G]} -> X float64 [N, G, nb, P + 1] (alpha^(p) then, last, beta^(p))."""
    N, G, _ = alphas[bits[0]].shape
    X = np.zeros((N, G, len(bits), bits[-1] + 1))
    for b, p in enumerate(bits):
        X[:, :, b, :p] = alphas[p]
        X[:, :, b, -1] = betas[p]
    return X


def _from_X(X, bits):
    """Inverse of ``_to_X``."""
    alphas = {p: X[:, :, b, :p].copy() for b, p in enumerate(bits)}
    return alphas, {p: X[:, :, b, -1].copy() for b, p in enumerate(bits)}


def pick_candidates(J, E_low, keep_low=True):
    """(pick int [N, G], mu): per group, the candidate kept; J, E_low: float64 [C, N, G], candidate 0 = S0.

    pick = argmin_c J_c + mu E_low,c over the c with J_c <= J_0; mu = 0, or with keep_low the smallest
    multiplier >= 0 with sum E_low(picked) <= sum E_low,0 (bisection).
    """
    J = np.where(J <= J[0], J, np.inf)
    budget = E_low[0].sum()

    def pick(mu):
        return np.argmin(J + mu * E_low, axis=0)

    def low_error(mu):
        return np.take_along_axis(E_low, pick(mu)[None], 0).sum()

    if not keep_low or low_error(0.0) <= budget:
        return pick(0.0), 0.0
    lo, hi = 0.0, 1.0
    while low_error(hi) > budget:  # ends: a large mu takes each group's lowest E_low, which is <= E_low,0
        lo, hi = hi, 2.0 * hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if low_error(mid) <= budget else (mid, hi)
    return pick(hi), hi


def joint(W, bits, g, iters=20, weights=None, importance=None, asymmetric=False, *, keep_low=True,
          start=None, restart=True):
    """Joint multi-precision BCQ: (codes uint8 [N, K], {p: alpha float64 [N, G, p]}, {p: beta [N, G]}).

    W: float32 [N, K] (validated by the caller); bits: consecutive precisions; weights: lambda_p
    aligned with sorted(bits) (None: all 1); start: a progressive result (codes, alphas, betas) to
    reuse; restart: also descend from the fixed P-bit solution S1; keep_low: see the module doc.
    When keep_low needs mu > 0, S0 and S1 are descended once more with lambda_low + mu (the
    Lagrangian of the constrained problem), and those candidates join the pick.
    """
    bits = sorted(int(b) for b in bits)
    W = np.ascontiguousarray(W, dtype=np.float32)
    N, K = W.shape
    P, offset = bits[-1], int(bool(asymmetric))
    bits_arr = np.array(bits, dtype=np.int64)
    lam = np.ones(len(bits)) if weights is None else np.asarray(weights, dtype=np.float64)
    d = group_importance(importance, K, g)
    codes0, alphas0, betas0 = start if start is not None else progressive(W, bits, g, iters, importance, asymmetric)
    starts = [(codes0, _to_X(alphas0, betas0, bits))]
    if restart and len(bits) > 1:
        codes1, alpha1, beta1 = fit(W, P, g, iters, importance, asymmetric)
        alphas1, betas1 = {P: alpha1}, {P: beta1}
        for p in bits[:-1]:  # lower precisions read the leading planes: least-squares scales for them
            alphas1[p], betas1[p] = lstsq_codes(W, d, codes1, p, g, offset)
        starts.append((codes1, _to_X(alphas1, betas1, bits)))

    def descend(codes, X, lam_descent):
        codes, X = codes.copy(), X.copy()
        _descend_all(W, d, codes, bits_arr, lam_descent, g, int(iters), offset, X)
        return codes, X

    def scores(cands):  # J and E_low of every candidate, always under the caller's lambda
        J, E_low = np.zeros((len(cands), N, K // g)), np.zeros((len(cands), N, K // g))
        for c, (codes, X) in enumerate(cands):
            _errors_all(W, d, codes, bits_arr, lam, g, X, J[c], E_low[c])
        return J, E_low

    cands = starts[:1] + [descend(codes, X, lam) for codes, X in starts]
    pick, mu = pick_candidates(*scores(cands), keep_low)
    if mu > 0:
        lam_mu = lam.copy()
        lam_mu[0] += mu
        cands += [descend(codes, X, lam_mu) for codes, X in starts]
        pick, mu = pick_candidates(*scores(cands), keep_low)
    codes = np.choose(np.repeat(pick, g, axis=1), [c for c, _ in cands]).astype(np.uint8)
    X = np.choose(pick[:, :, None, None], [X for _, X in cands])
    return (codes,) + _from_X(X, bits)


def joint_objective(W, signs, alpha, g, weights=None, importance=None, beta=None) -> float:
    """J = sum_p lambda_p sum_{n,k} d_k (W - W_hat_p)^2 for signs [P, N, K], alpha {p: [p, N, G]}."""
    bits = sorted(alpha)
    lam = [1.0] * len(bits) if weights is None else list(weights)
    return float(sum(lam[b] * objective(W, signs[:p], alpha[p], g, importance, None if beta is None else beta[p])
                     for b, p in enumerate(bits)))

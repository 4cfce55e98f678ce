r"""Greedy initialisation and alternating refinement of a p-bit BCQ (the AnyBCQ base fit).

Per group (w [g], importance d [g], see ``bcq_core.codes`` for codes and levels):

Greedy (r = w - beta, beta = the d-weighted mean when asymmetric, else 0):

    for i < p:   B_i = sign(r)  (sign 0 = +1),   alpha_i = sum_k d_k |r_k| / sum_k d_k,   r -= alpha_i B_i

Alternating refinement, T rounds of

    1. alpha (and beta) <- least squares given B                      (bcq_core.lstsq)
    2. alpha <- |alpha| sorted descending; each flipped scale flips its plane and the planes are
       permuted with their scales, so W_hat is unchanged                (``canonicalise``)
    3. B <- the nearest of the 2^p levels given alpha, weight by weight  (``assign``)

and one closing least-squares step, so the scales returned are optimal for the codes returned.
Steps 1 and 3 each never increase E = sum_k d_k (w_k - W_hat_k)^2; the best state seen (greedy
included) is kept anyway, so the result is never worse than greedy even in floating point.  A round
whose assignment changes no code is a fixed point, and the loop stops there.

Nearest level as a lower envelope.  Choosing the code c that minimises (w - L[c])^2 is, after
dropping w^2, choosing the lowest of the lines f_c(w) = L[c]^2 - 2 L[c] w.  ``envelope`` builds the
lower envelope of any set of lines f_c(w) = c0_c - 2 a_c w (sorted by slope, convex-hull trick)
once per group, and ``assign`` finds each weight's line by a branch-free bisection over the
breakpoints: p steps per weight.  ``bcq_core.joint`` reuses both with other lines.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .codes import group_importance, levels, weighted_sse
from .lstsq import group_lstsq


@njit(cache=True)
def workspace(P, g):
    """Scratch for the groups of one row, allocated once per row (a group's kernels allocate nothing):
    (h0, h1, A, b, L, c0, breaks, hull, order, w, r, best_codes, best_x) for up to P planes, g weights."""
    n, m = 1 << P, P + 2
    return (np.empty(n), np.empty(n), np.empty((m, m)), np.empty(m), np.empty(n), np.empty(n), np.empty(n),
            np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.empty(g), np.empty(g),
            np.empty(g, dtype=np.uint8), np.empty(m))


@njit(cache=True)
def argsort_small(a, n, order):
    """order[:n] = the indices that sort a[:n] ascending (stable insertion sort; n is 2^p <= 256)."""
    for i in range(n):
        v, j = a[i], i
        while j > 0 and a[order[j - 1]] > v:
            order[j] = order[j - 1]
            j -= 1
        order[j] = i


@njit(cache=True)
def envelope(a, c0, n, order, hull, breaks):
    """Lower envelope of the lines f_c(w) = c0[c] - 2 a[c] w, c < n (order: int scratch [n]).

    Writes the envelope's codes in order of increasing w to hull and the w where line j hands over
    to line j + 1 to breaks[j] (strictly increasing); returns the number of lines on it.
    """
    argsort_small(a, n, order)
    m = 0
    for t in range(n):
        c = order[t]
        if m > 0 and a[hull[m - 1]] == a[c]:  # same slope: keep the lower line
            if c0[c] >= c0[hull[m - 1]]:
                continue
            m -= 1
        while m >= 2:  # line m-1 is never lowest if c overtakes line m-2 no later than m-1 does
            l1, l2 = hull[m - 2], hull[m - 1]
            x12 = (c0[l2] - c0[l1]) / (2.0 * (a[l2] - a[l1]))
            x13 = (c0[c] - c0[l1]) / (2.0 * (a[c] - a[l1]))
            if x13 <= x12:
                m -= 1
            else:
                break
        hull[m] = c
        m += 1
    for j in range(m - 1):
        l1, l2 = hull[j], hull[j + 1]
        breaks[j] = (c0[l2] - c0[l1]) / (2.0 * (a[l2] - a[l1]))
    return m


@njit(cache=True)
def assign(w, hull, breaks, m, n, keep_mask, codes):
    """codes_k <- (codes_k & keep_mask) | the envelope line of w_k; returns whether any code changed.

    n: a power of two >= m (breaks must hold n - 1 entries).  The search is branch-free because real
    weights make the branch of a plain bisection unpredictable, which cost ~3x here: breaks are
    padded with +inf to n - 1 entries and pos (the number of breakpoints below w_k) is built from
    the powers of two n/2, n/4, ..., 1, each added when the entry it points past is below w_k.
    """
    for j in range(m - 1, n - 1):
        breaks[j] = np.inf
    changed = False
    for k in range(w.size):
        pos, step = 0, n >> 1
        while step > 0:
            pos += step if breaks[pos + step - 1] < w[k] else 0
            step >>= 1
        c = (codes[k] & keep_mask) | hull[pos]
        changed |= c != codes[k]
        codes[k] = c
    return changed


@njit(cache=True)
def canonicalise(alpha, p, codes):
    """alpha[:p] <- |alpha| sorted descending, planes flipped and permuted to match (W_hat unchanged)."""
    done = True
    for i in range(p):
        done = done and alpha[i] >= 0 and (i == 0 or alpha[i] <= alpha[i - 1])
    if done:  # the usual case after the first rounds
        return
    flip = 0
    for i in range(p):
        if alpha[i] < 0:
            alpha[i] = -alpha[i]
            flip |= 1 << i
    order = np.argsort(-alpha[:p], kind="mergesort")  # new plane i = old plane order[i]
    alpha[:p] = alpha[:p][order]
    for k in range(codes.size):
        c = codes[k] ^ flip
        new = 0
        for i in range(p):
            new |= ((c >> order[i]) & 1) << i
        codes[k] = (codes[k] & ~((1 << p) - 1)) | new


@njit(cache=True)
def greedy_group(w, d, p, offset, codes, x, r):
    """Greedy codes (bits < p of codes) and scales x[:p] (x[p] = beta when offset); r: scratch [g]."""
    S, Sw = 0.0, 0.0
    for k in range(w.size):
        S += d[k]
        Sw += d[k] * w[k]
    beta = Sw / S if offset else 0.0
    for k in range(w.size):
        r[k] = w[k] - beta
        codes[k] &= ~((1 << p) - 1)
    for i in range(p):
        a = 0.0
        for k in range(w.size):
            a += d[k] * abs(r[k])
        a /= S
        for k in range(w.size):
            if r[k] >= 0:
                codes[k] |= 1 << i
                r[k] -= a
            else:
                r[k] += a
        x[i] = a
    x[p] = beta


@njit(cache=True)
def fit_group(w, d, p, iters, offset, codes, x, ws):
    """Greedy + ``iters`` rounds of {LS, canonicalise, nearest level} + closing LS, best state kept.

    codes: uint8 [g], bits < p rewritten; x: float64 [p + 1] out (alpha, then beta or 0); ws: workspace.
    """
    h0, h1, A, b, L, L2, breaks, hull, order, _, r, best_codes, best_x = ws
    n, mask = 1 << p, (1 << p) - 1
    greedy_group(w, d, p, offset, codes, x, r)
    levels(x, x[p], p, L)
    best = weighted_sse(w, d, codes, mask, L)
    best_codes[:] = codes
    best_x[:p + 1] = x[:p + 1]
    for t in range(iters + 1):
        group_lstsq(w, d, codes, p, offset, h0, h1, A, b, x)
        if not offset:
            x[p] = 0.0
        canonicalise(x, p, codes)
        levels(x, x[p], p, L)
        e = weighted_sse(w, d, codes, mask, L)
        if e < best:
            best = e
            best_codes[:] = codes
            best_x[:p + 1] = x[:p + 1]
        if t == iters:
            break
        for c in range(n):
            L2[c] = L[c] * L[c]
        m = envelope(L, L2, n, order, hull, breaks)
        if not assign(w, hull, breaks, m, n, ~mask, codes):
            break  # fixed point: the next LS step would return the same scales
    codes[:] = best_codes
    x[:p + 1] = best_x[:p + 1]
    canonicalise(x, p, codes)  # a no-op unless the best state is greedy's, whose scales need not be sorted
    return best


@njit(parallel=True, cache=True)
def _fit_all(W, d, codes, p, g, iters, offset, greedy_only, alpha, beta):
    N, K = W.shape
    for n in prange(N):
        ws = workspace(p, g)
        w, x = ws[9], np.empty(p + 1)
        for j in range(K // g):
            lo = j * g
            w[:] = W[n, lo:lo + g]
            if greedy_only:
                greedy_group(w, d[lo:lo + g], p, offset, codes[n, lo:lo + g], x, ws[10])
            else:
                fit_group(w, d[lo:lo + g], p, iters, offset, codes[n, lo:lo + g], x, ws)
            alpha[n, j, :] = x[:p]
            beta[n, j] = x[p]


def fit(W, p, g, iters=20, importance=None, asymmetric=False, *, greedy_only=False):
    """p-bit BCQ of every group of W: (codes uint8 [N, K], alpha float64 [N, G, p], beta float64 [N, G]).

    W: float32 [N, K], already validated (``bcq_core.quantize`` checks user input); g divides K.
    iters: T refinement rounds (0: greedy, then the closing least-squares step); greedy_only: stop
    after greedy.  beta is all zeros unless asymmetric.  Scales stay float64 here: the public entry
    points round them to float32 once, at the end.
    """
    W = np.ascontiguousarray(W, dtype=np.float32)
    N, K = W.shape
    codes = np.zeros((N, K), dtype=np.uint8)
    alpha, beta = np.zeros((N, K // g, p)), np.zeros((N, K // g))
    d = group_importance(importance, K, g)
    _fit_all(W, d, codes, p, g, int(iters), int(bool(asymmetric)), bool(greedy_only), alpha, beta)
    return codes, alpha, beta

r"""AnyBCQ progressive precision expansion: one set of planes serving every precision p_low..p_high.

Base: a p_low-bit fit (greedy + T rounds, ``bcq_core.alternating``).  Then, for p = p_low .. p_high-1,
group by group, with planes B_0..B_{p-1} frozen and the p-bit scales as the start
(alpha^(p+1) = [alpha^(p), 0], beta^(p+1) = beta^(p)), T rounds of

    R       = w - beta^(p+1) - sum_{j<p} alpha^(p+1)_j B_j     (the CURRENT p+1 scales, as the paper)
    B_p     = sign(R)                                           (sign 0 = +1)
    alpha^(p+1), beta^(p+1) <- least squares over all p+1 planes (bcq_core.lstsq)

The first round's B_p is the sign of the p-bit fit's residual.  Old planes never change, so a p-bit
request reads the first p planes of one stored set; every precision keeps its own full scale set
alpha^(p) [p, N, G] (2 + 3 + 4 = 9 scales per group for 2/3/4 bits).

Error never grows with p: [alpha^(p), 0] is a feasible p+1 answer with the p-bit error, and the best
state seen (that one included) is kept.  A round that leaves B_p unchanged is a fixed point, and the
loop stops there.  No |alpha|-sort here: it would permute frozen planes.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .alternating import fit, workspace
from .codes import group_importance, levels, weighted_sse
from .lstsq import group_lstsq


@njit(cache=True)
def expand_group(w, d, p, iters, offset, codes, x, ws):
    """Add plane p (bit p of codes) to a p-bit group; x: [alpha^(p) (p), beta] in, [alpha^(p+1), beta] out.

    codes: uint8 [g], bits < p read only; x: float64 [p + 2]; ws: ``alternating.workspace(p + 1, g)``.
    """
    h0, h1, A, b, L, Lp, _, _, _, _, _, best_codes, best_x = ws
    q = p + 1
    lo_mask, mask, bit = (1 << p) - 1, (1 << q) - 1, 1 << p
    beta = x[p]
    x[p] = 0.0  # alpha_p = 0
    x[q] = beta
    for k in range(w.size):  # any B_p: with alpha_p = 0 the (p+1)-bit error is the p-bit error
        codes[k] &= lo_mask
    levels(x, x[q], q, L)
    best = weighted_sse(w, d, codes, mask, L)
    best_codes[:] = codes
    best_x[:q + 1] = x[:q + 1]
    for t in range(max(iters, 1)):  # iters = 0 still takes the first step: sign of the residual, LS
        levels(x, x[q], p, Lp)  # levels of the frozen planes under the current (p+1)-bit scales
        changed = False
        for k in range(w.size):
            c = codes[k] & lo_mask
            new = c | bit if w[k] - Lp[c] >= 0 else c
            changed |= new != codes[k]
            codes[k] = new
        if t > 0 and not changed:
            break  # fixed point: the LS step would return the same scales
        group_lstsq(w, d, codes, q, offset, h0, h1, A, b, x)
        if not offset:
            x[q] = 0.0
        levels(x, x[q], q, L)
        e = weighted_sse(w, d, codes, mask, L)
        if e < best:
            best = e
            best_codes[:] = codes
            best_x[:q + 1] = x[:q + 1]
    codes[:] = best_codes
    x[:q + 1] = best_x[:q + 1]
    return best


@njit(parallel=True, cache=True)
def _expand_all(W, d, codes, p, g, iters, offset, alpha_in, beta_in, alpha_out, beta_out):
    N, K = W.shape
    for n in prange(N):
        ws = workspace(p + 1, g)
        w, x = ws[9], np.empty(p + 2)
        for j in range(K // g):
            lo = j * g
            w[:] = W[n, lo:lo + g]
            x[:p] = alpha_in[n, j]
            x[p] = beta_in[n, j]
            expand_group(w, d[lo:lo + g], p, iters, offset, codes[n, lo:lo + g], x, ws)
            alpha_out[n, j, :] = x[:p + 1]
            beta_out[n, j] = x[p + 1]


def expand(W, codes, alpha, beta, g, iters=20, importance=None, asymmetric=False):
    """One expansion step p -> p+1, in place on codes (bit p written, bits < p untouched).

    W: float32 [N, K]; codes: uint8 [N, K]; alpha: float64 [N, G, p]; beta: float64 [N, G].
    Returns (alpha float64 [N, G, p+1], beta float64 [N, G]).
    """
    N, K = W.shape
    p = alpha.shape[-1]
    alpha_out, beta_out = np.zeros((N, K // g, p + 1)), np.zeros((N, K // g))
    d = group_importance(importance, K, g)
    _expand_all(np.ascontiguousarray(W, dtype=np.float32), d, codes, p, g, int(iters), int(bool(asymmetric)),
                np.ascontiguousarray(alpha), np.ascontiguousarray(beta), alpha_out, beta_out)
    return alpha_out, beta_out


def progressive(W, bits, g, iters=20, importance=None, asymmetric=False):
    """AnyBCQ from p_low = min(bits) to p_high = max(bits) (bits consecutive, already validated).

    Returns (codes uint8 [N, K] with max(bits) planes, {p: alpha float64 [N, G, p]}, {p: beta float64 [N, G]}).
    """
    bits = sorted(bits)
    codes, alpha, beta = fit(W, bits[0], g, iters, importance, asymmetric)
    alphas, betas = {bits[0]: alpha}, {bits[0]: beta}
    for p in bits[:-1]:
        alphas[p + 1], betas[p + 1] = expand(W, codes, alphas[p], betas[p], g, iters, importance, asymmetric)
    return codes, alphas, betas

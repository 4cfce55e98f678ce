r"""Binary-coded quantization (BCQ) of a weight matrix: the unpacked, math-level form.

Shape letters, used the same way in ``bcq_core``, ``reference``, ``gpu`` and ``sim``:

    N  outputs (rows of W)          K  inputs (columns of W)
    g  group size along K           G  = K / g groups per row
    P  bit-planes stored            p  precision asked for (p <= P)
    M  batch (rows of x)

Each group of g consecutive weights of one row is a sum of +-1 bit-planes times scales:

    W[n, k] ~= beta_p[n, G(k)] + sum_{i < p} alpha_p[i, n, G(k)] * B_i[n, k],   B_i in {-1, +1}

with G(k) = k // g.  A *multi-precision* BCQ stores P planes once and one full scale set
``alpha_p`` (and optionally ``beta_p``) for every precision p it serves; a p-bit request uses the
first p planes and ``alpha_p``.  Planes are shared, scales are not (AnyBCQ).

The packed storage layout lives in ``bcq_core.layout``; this module is the arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .checks import check_precision


@dataclass
class BCQ:
    """A multi-precision BCQ of one (N, K) matrix.

    signs:  int8  [P, N, K], every entry -1 or +1 (plane i of weight (n, k)).
    alpha:  {p: float32 [p, N, G]}: scales of precision p for planes 0..p-1.
    beta:   {p: float32 [N, G]} or None: per-group offsets (asymmetric BCQ only).
    group_size: g, with K % g == 0.
    """

    signs: np.ndarray
    alpha: dict[int, np.ndarray]
    group_size: int
    beta: dict[int, np.ndarray] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.beta is not None and set(self.beta) != set(self.alpha):
            raise ValueError(f"beta: precisions {sorted(self.beta)} must match alpha's {sorted(self.alpha)}")
        P, N, K = self.signs.shape
        g = self.group_size
        if K % g:
            raise ValueError(f"group_size: must divide K={K}, got {g}")
        for p, a in self.alpha.items():
            if not 1 <= p <= P:
                raise ValueError(f"alpha: precision {p} needs {p} planes, only {P} stored")
            if a.shape != (p, N, K // g):
                raise ValueError(f"alpha[{p}]: shape must be {(p, N, K // g)}, got {a.shape}")
            if self.beta is not None and self.beta[p].shape != (N, K // g):
                raise ValueError(f"beta[{p}]: shape must be {(N, K // g)}, got {self.beta[p].shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.signs.shape[1], self.signs.shape[2]

    @property
    def precisions(self) -> tuple[int, ...]:
        return tuple(sorted(self.alpha))

    def dequantize(self, p: int) -> np.ndarray:
        """W_hat at precision p, float32 [N, K]."""
        check_precision("p", p, self.alpha)
        beta = None if self.beta is None else self.beta[p]
        return dequantize(self.signs[:p], self.alpha[p], self.group_size, beta)


def dequantize(signs: np.ndarray, alpha: np.ndarray, g: int, beta: np.ndarray | None = None) -> np.ndarray:
    """sum_i alpha[i, n, k // g] * signs[i, n, k] (+ beta[n, k // g]), float32 [N, K].

    signs: [p, N, K] of +-1; alpha: [p, N, G]; beta: [N, G] or None.
    """
    p, N, K = signs.shape
    s = signs.reshape(p, N, K // g, g).astype(np.float32)
    W = (alpha.astype(np.float32)[..., None] * s).sum(axis=0)  # (N, G, g)
    if beta is not None:
        W = W + beta.astype(np.float32)[..., None]
    return W.reshape(N, K)


def relative_error(W: np.ndarray, W_hat: np.ndarray) -> float:
    """||W - W_hat||_F / ||W||_F (0 for an all-zero W reproduced exactly)."""
    W = np.asarray(W, dtype=np.float64)
    d = np.linalg.norm(W - np.asarray(W_hat, dtype=np.float64))
    n = np.linalg.norm(W)
    return float(d / n) if n > 0 else float(d)

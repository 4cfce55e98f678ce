r"""The quantizers' public entry points: one weight matrix in, a ``BCQ`` out.

    quantize(W, config, importance=None)        -> BCQ               method "progressive" or "joint"
    quantize_fixed(W, config, importance=None)  -> {p: BCQ}          each precision fitted on its own

W: float [N, K] (NumPy float16/32/64, an ml_dtypes bfloat16 array, or a torch tensor of those);
importance: d [K] >= 0, the weight of input k in the error sum_{n,k} d_k (W - W_hat)^2 (for example
the diagonal of X^T X from calibration activations; None: all ones).  Everything is checked before any
work; a bad argument raises ValueError/TypeError whose message starts with its name.

A multi-precision BCQ holds P = max(bits) planes (int8 +-1 signs [P, N, K]) and one full float32 scale
set alpha[p] [p, N, G] per precision (plus beta[p] [N, G] when asymmetric).  The packed file stores
the scales as float16 (``bcq_core.layout.pack`` rounds them): score a file with the rounded scales.
Methods: "progressive" = AnyBCQ (``bcq_core.anybcq``), "joint" = joint refinement of all precisions
(``bcq_core.joint``), "fixed" = one independent BCQ per precision (``bcq_core.fixed``; use
``quantize_fixed``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anybcq import progressive
from .bcq import BCQ
from .checks import check_bits, check_group_size, check_matrix, dtype_name
from .codes import codes_to_signs
from .fixed import fixed
from .joint import joint

METHODS = ("progressive", "joint", "fixed")


@dataclass
class QuantConfig:
    """How to quantize.

    bits: consecutive precisions, e.g. (2, 3, 4); group_size: g, a multiple of 32 dividing K;
    iters: T, the most rounds of each stage (base fit, each expansion, each joint descent; a stage
    stops early at a fixed point); 0 = greedy + one least-squares step (an expansion still adds
    its plane); method: one of METHODS; asymmetric: also fit a per-group offset beta;
    joint_weights: lambda_p of the joint objective, a {p: weight} mapping or a sequence aligned with
    sorted bits (None: all 1), stored as a tuple.  "joint" runs ``bcq_core.joint.joint`` with its
    defaults: both starts, and no loss allowed at the lowest precision (keep_low).
    """

    bits: tuple[int, ...] = (2, 3, 4)
    group_size: int = 128
    iters: int = 20
    method: str = "progressive"
    asymmetric: bool = False
    joint_weights: tuple[float, ...] | dict[int, float] | None = None

    def __post_init__(self):
        self.bits = check_bits("bits", self.bits)
        check_group_size("group_size", self.group_size, self.group_size)  # K unknown yet: type, sign, 32 | g
        if not isinstance(self.iters, (int, np.integer)) or isinstance(self.iters, bool):
            raise TypeError(f"iters: must be an int, got {type(self.iters).__name__}")
        if self.iters < 0:
            raise ValueError(f"iters: must be >= 0, got {self.iters}")
        if self.method not in METHODS:
            raise ValueError(f"method: must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.asymmetric, (bool, np.bool_)):
            raise TypeError(f"asymmetric: must be a bool, got {type(self.asymmetric).__name__}")
        self.asymmetric = bool(self.asymmetric)
        self.joint_weights = _check_joint_weights(self.joint_weights, self.bits)


def _check_joint_weights(weights, bits):
    if weights is None:
        return None
    if isinstance(weights, dict):
        if sorted(weights) != list(bits):
            raise ValueError(f"joint_weights: keys must be the precisions {list(bits)}, got {sorted(weights)}")
        weights = [weights[p] for p in bits]
    try:
        lam = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"joint_weights: must be numbers, got {weights!r}") from None
    if lam.shape != (len(bits),):
        raise ValueError(f"joint_weights: need one weight per precision {list(bits)}, got {weights!r}")
    if not np.isfinite(lam).all() or (lam < 0).any() or not (lam > 0).any():
        raise ValueError(f"joint_weights: must be finite, >= 0 and not all 0, got {weights!r}")
    return tuple(float(x) for x in lam)


def _check_importance(importance, K):
    if importance is None:
        return None
    d = np.asarray(importance)
    if d.dtype == bool or not (np.issubdtype(d.dtype, np.integer) or np.issubdtype(d.dtype, np.floating)):
        raise TypeError(f"importance: must be a real float array [K], got dtype {d.dtype}")
    if d.shape != (K,):
        raise ValueError(f"importance: must have shape (K,) = ({K},), got {d.shape}")
    d = d.astype(np.float64)
    if not np.isfinite(d).all():
        raise ValueError(f"importance: must be finite, found {int((~np.isfinite(d)).sum())} NaN/Inf")
    if (d < 0).any():
        raise ValueError(f"importance: must be >= 0, found {int((d < 0).sum())} negative entries")
    if not (d > 0).any():
        raise ValueError("importance: must not be all zero")
    return d


def _as_matrix(W):
    """A torch tensor becomes NumPy (bfloat16 widened exactly to float32); then ``check_matrix``."""
    source = dtype_name(W)
    if type(W).__module__.startswith("torch") and hasattr(W, "detach"):
        t = W.detach().cpu()
        source = str(t.dtype).removeprefix("torch.")
        W = t.float().numpy() if source == "bfloat16" else t.numpy()
    return check_matrix("W", W), source


def _checked(W, config, importance):
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config: must be a QuantConfig, got {type(config).__name__}")
    W, source = _as_matrix(W)
    g = check_group_size("group_size", config.group_size, W.shape[1])
    return W, g, _check_importance(importance, W.shape[1]), source


def _bcq(codes, alphas, betas, P, g, asymmetric, meta):
    alpha = {p: np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32) for p, a in alphas.items()}
    beta = {p: b.astype(np.float32) for p, b in betas.items()} if asymmetric else None
    return BCQ(signs=codes_to_signs(codes, P), alpha=alpha, group_size=g, beta=beta, meta=meta)


def quantize(W, config: QuantConfig | None = None, importance=None) -> BCQ:
    """Multi-precision BCQ of W [N, K]: shared signs [max(bits), N, K], alpha {p: float32 [p, N, G]}.

    config.method "progressive" (AnyBCQ) or "joint"; for "fixed" call ``quantize_fixed``.
    """
    config = QuantConfig() if config is None else config
    W, g, d, source = _checked(W, config, importance)
    if config.method == "fixed":
        raise ValueError("method: 'fixed' gives one BCQ per precision; call quantize_fixed(W, config)")
    args = (W, config.bits, g, config.iters)
    if config.method == "progressive":
        codes, alphas, betas = progressive(*args, importance=d, asymmetric=config.asymmetric)
    else:
        codes, alphas, betas = joint(*args, weights=config.joint_weights, importance=d, asymmetric=config.asymmetric)
    meta = {"method": config.method, "iters": config.iters, "source_dtype": source, "importance": d is not None,
            "joint_weights": config.joint_weights}
    return _bcq(codes, alphas, betas, config.bits[-1], g, config.asymmetric, meta)


def quantize_fixed(W, config: QuantConfig | None = None, importance=None) -> dict[int, BCQ]:
    """One independent single-precision BCQ per p in config.bits: {p: BCQ with p planes and alpha {p: ...}}.

    config.method is not read.
    """
    config = QuantConfig() if config is None else config
    W, g, d, source = _checked(W, config, importance)
    meta = {"method": "fixed", "iters": config.iters, "source_dtype": source, "importance": d is not None}
    return {p: _bcq(codes, {p: alpha}, {p: beta}, p, g, config.asymmetric, dict(meta))
            for p, (codes, alpha, beta) in fixed(W, config.bits, g, config.iters, d, config.asymmetric).items()}

"""Random packed BCQ problems: the inputs of the reference and GPU tests and of the launch checks in benchmarks/."""
from __future__ import annotations

import numpy as np

VALUE_KINDS = ("normal", "tiny", "huge", "mixed")


def random_activations(rng, M, K, kind="normal") -> np.ndarray:
    """float16 [M, K]: normal, subnormal-range ('tiny'), near-overflow ('huge') or a mix of all."""
    if kind == "normal":
        x = rng.standard_normal((M, K))
    elif kind == "tiny":
        x = rng.standard_normal((M, K)) * 2.0 ** -20  # fp16 subnormals
    elif kind == "huge":
        x = rng.uniform(-60000, 60000, (M, K))
    else:
        scale = 2.0 ** rng.integers(-24, 15, size=(M, K))
        x = rng.standard_normal((M, K)) * scale
    x = x.astype(np.float16)
    x[~np.isfinite(x)] = 0
    return x


def random_problem(rng, M, N, K, p, g, *, with_beta=False, kind="normal"):
    """(x, planes, alpha, beta) with random bits, positive descending-ish scales."""
    x = random_activations(rng, M, K, kind)
    planes = rng.integers(0, 2 ** 32, size=(p, N, K // 32), dtype=np.uint64).astype(np.uint32)
    alpha = (np.abs(rng.standard_normal((p, N, K // g))) * 0.02 * 0.5 ** np.arange(p)[:, None, None])
    alpha = alpha.astype(np.float16)
    beta = (rng.standard_normal((N, K // g)) * 0.01).astype(np.float16) if with_beta else None
    return x, planes, alpha, beta

"""Argument checks shared by every public entry point.

Each check raises before any work is done, naming the argument and the rule it broke, so a
user sees ``ValueError: W: must be 2-D (N, K), got shape (3,)`` instead of a broadcast error
three calls deeper.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = ("float16", "float32", "float64", "bfloat16")


def dtype_name(a) -> str:
    """Name of an array's dtype; torch-style bfloat16 arrays from ml_dtypes included."""
    return str(getattr(a, "dtype", type(a).__name__))


def check_matrix(name: str, W, *, finite: bool = True) -> np.ndarray:
    """W must be a 2-D float array (float16/32/64 or bfloat16) with only finite values.

    Returns it as a float32 NumPy array (bfloat16 and float16 widen exactly).
    """
    if not hasattr(W, "shape") or not hasattr(W, "dtype"):
        raise TypeError(f"{name}: must be an array, got {type(W).__name__}")
    if dtype_name(W) not in FLOAT_DTYPES:
        raise TypeError(f"{name}: dtype must be one of {FLOAT_DTYPES}, got {dtype_name(W)}")
    if len(W.shape) != 2:
        raise ValueError(f"{name}: must be 2-D (N, K), got shape {tuple(W.shape)}")
    if W.shape[0] == 0 or W.shape[1] == 0:
        raise ValueError(f"{name}: must be non-empty, got shape {tuple(W.shape)}")
    W32 = np.asarray(W, dtype=np.float32)
    if finite and not np.isfinite(W32).all():
        bad = int((~np.isfinite(W32)).sum())
        raise ValueError(f"{name}: must contain only finite values, found {bad} NaN/Inf")
    return W32


def check_group_size(name: str, g: int, K: int) -> int:
    """g must be a positive multiple of 32 (one packed word) that divides K."""
    if not isinstance(g, (int, np.integer)) or isinstance(g, bool):
        raise TypeError(f"{name}: must be an int, got {type(g).__name__}")
    if g <= 0 or g % 32:
        raise ValueError(f"{name}: must be a positive multiple of 32, got {g}")
    if K % g:
        raise ValueError(f"{name}: must divide K={K}, got {g} (K % {g} = {K % g})")
    return int(g)


def check_bits(name: str, bits) -> tuple[int, ...]:
    """bits must be distinct consecutive precisions 1..8, e.g. (2, 3, 4)."""
    try:
        bits = tuple(sorted(int(b) for b in bits))
    except (TypeError, ValueError):
        raise TypeError(f"{name}: must be a sequence of ints, got {bits!r}") from None
    if not bits:
        raise ValueError(f"{name}: must name at least one precision")
    if bits[0] < 1 or bits[-1] > 8:
        raise ValueError(f"{name}: precisions must lie in 1..8, got {bits}")
    if list(bits) != list(range(bits[0], bits[-1] + 1)):
        raise ValueError(f"{name}: precisions must be distinct and consecutive, got {bits}")
    return bits


def check_precision(name: str, p: int, available) -> int:
    """p must be one of the precisions a model stores."""
    if not isinstance(p, (int, np.integer)) or isinstance(p, bool):
        raise TypeError(f"{name}: must be an int, got {type(p).__name__}")
    if int(p) not in available:
        raise ValueError(f"{name}: this model stores precisions {sorted(available)}, not {p}")
    return int(p)

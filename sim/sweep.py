"""Vectorised sweeps: numpy arrays of shapes, batches and bits in, arrays of times (and the rest) out.

    >>> import numpy as np
    >>> from sim import sweep
    >>> c = sweep("H100-SXM", "bcq_lut", N=[4096, 28672], K=4096, M=[1, 8, 32], bits=[2, 3, 4], grid=True)
    >>> c.time_s.shape          # (N, K, M, bits)
    (2, 1, 3, 3)

With ``grid=False`` (default) the inputs broadcast like numpy arrays, so a million random
configurations price in one call (benchmarks/sim_speed.py measures the rate).
"""
from __future__ import annotations

import numpy as np

from . import accel
from .cost import Cost
from .gpu import gemv
from .hardware import GPU, get_device


def layer_cost(device, method: str | None, N, K, M=1, bits=None, **options) -> Cost:
    """One linear layer on a GPU (by method name) or on an accelerator (method ignored, or its name)."""
    dev = get_device(device)
    if isinstance(dev, GPU):
        if method is None:
            raise ValueError("method: a GPU needs a method (fp16, bcq_lut, anyprec, bcq_fixed, int4)")
        return gemv(dev, method, N, K, M, bits, **options)
    if options:
        raise ValueError(f"options: accelerators take none, got {sorted(options)}")
    return accel.gemm(dev, N, K, M, 4 if bits is None else bits)


def sweep(device, method: str | None, *, N, K, M=1, bits=None, grid: bool = False, **options) -> Cost:
    """``layer_cost`` over arrays; ``grid=True`` takes the outer product of 1-D N, K, M, bits."""
    if grid:
        axes = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (N, K, M)]
        axes.append(np.atleast_1d(np.asarray(16 if bits is None else bits, dtype=np.float64)))
        for name, a in zip(("N", "K", "M", "bits"), axes):
            if a.ndim != 1:
                raise ValueError(f"{name}: grid=True takes 1-D arrays, got shape {a.shape}")
        N, K, M, b = np.meshgrid(*axes, indexing="ij")
        bits = None if bits is None else b
    return layer_cost(device, method, N, K, M, bits, **options)


def columns(cost: Cost, **inputs) -> dict[str, np.ndarray]:
    """Flat columns (inputs, time, bytes, binding) of a sweep, for a table or a JSON dump."""
    shape = cost.shape
    out = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), shape).ravel() for k, v in inputs.items()}
    out["time_s"] = np.asarray(cost.time_s).ravel()
    out["bytes"] = np.broadcast_to(cost.bytes_total, shape).ravel()
    out["binding"] = np.broadcast_to(cost.binding, shape).ravel()
    if cost.energy_J is not None:
        out["tops_per_W"] = np.broadcast_to(cost.tops_per_W, shape).ravel()
    return out

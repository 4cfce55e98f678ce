r"""BCQ accelerators (FIGLUT, FIGNA, iFPU) as the FIGLUT paper evaluates them: cycles and energy of
one GEMM y[M, N] = x[M, K] W_hat[N, K]^T with q-bit weights.

Timing: a weight-stationary array holds one tile of tile_K x tile_N weights (one bit-plane of
them for bit-serial designs) and streams the M activation rows through it:

    passes  = q                     bit-serial (FIGLUT, iFPU): one pass per plane; fractional q
                                    (a mix of precisions, e.g. 2.4 bits on average) runs too
            = ceil(q / mac_bits)    FIGNA: weights below 4 bits padded up to 4
    cycles  = ceil(N/tile_N) ceil(K/tile_K) passes (max(M, weight_load_cycles) + fill_drain_cycles)

Energy, by kind (pJ per event from sim/hardware.toml; G = K / group_size):

    dram      bits: stored_bits N K + 16 q N K / g (scales; 16 N K / g for FIGNA, whose uniform INT4 is charged no zero-points) + 16 M K + 16 M N,  stored_bits = max(q, min_storage_bits)
    sram      bits: 2 stored_bits N K (fill + drain of the weight buffer)
                    + 16 M K ceil(N/tile_N) passes        (activations, re-streamed per N tile and pass)
                    + 64 M N ceil(K/tile_K)               (fp32 partial sums, read + write per K tile)
    datapath  events: FIGLUT  M N K q / mu                (read-accumulate of a mu-bit key)
                      FIGNA   M N K passes                (FP-INT MAC)
                      iFPU    M N K q                     (binary lane: add of an aligned integer)
    lut_build FIGLUT: M (K/mu) ceil(N / (racs_per_lut lut_passdown_pes)) passes x lut_build_adds fp16 adds
    align     iFPU: M K ceil(N/tile_N) alignments (one fp16-add-sized shift per activation per N tile)

TOPS/W = 2 M N K / energy.  ``datapath_pJ`` is fitted (sim/calibrate.py fit_accelerators); the
memory and primitive energies are literature values, not fitted.
"""
from __future__ import annotations

import numpy as np

from .cost import Cost, as_arrays, ceil_div, roofline
from .hardware import Accelerator, get_device

PJ = 1e-12


def gemm(acc, N, K, M=32, bits=4) -> Cost:
    """Cycles, energy and TOPS/W of one GEMM on a BCQ accelerator (arrays broadcast)."""
    acc = get_device(acc)
    if not isinstance(acc, Accelerator):
        raise TypeError(f"device: {acc.name} is a GPU; use sim.gpu")
    N, K, M, q = as_arrays(N, K, M, bits)
    for name, a in (("N", N), ("K", K), ("M", M), ("bits", q)):
        if np.any(~(a > 0)):
            raise ValueError(f"{name}: must be positive")
    passes = q if acc.bit_serial else np.ceil(q / acc.mac_weight_bits)
    stored = np.maximum(q, acc.min_storage_bits)
    n_tiles, k_tiles = ceil_div(N, acc.tile_N), ceil_div(K, acc.tile_K)
    cycles = n_tiles * k_tiles * passes * (np.maximum(M, acc.weight_load_cycles) + acc.fill_drain_cycles)

    scale_bits = 16 * (q if acc.bit_serial else 1) * N * (K / acc.group_size)
    dram_bits = stored * N * K + scale_bits + 16 * M * K + 16 * M * N
    sram_bits = 2 * stored * N * K + 16 * M * K * n_tiles * passes + 64 * M * N * k_tiles
    macs = M * N * K
    if acc.kind == "figlut":
        datapath = macs * q / acc.mu
        lut_builds = M * (K / acc.mu) * ceil_div(N, acc.racs_per_lut * acc.lut_passdown_pes) * passes
        extra = {"lut_build": lut_builds * acc.lut_build_adds * acc.fp16_add_pJ * PJ}
        extra_ops = {"lut_build_add": lut_builds * acc.lut_build_adds}
    elif acc.kind == "figna":
        datapath = macs * passes
        extra, extra_ops = {}, {}
    else:  # ifpu
        datapath = macs * q
        aligns = M * K * n_tiles
        extra = {"align": aligns * acc.fp16_add_pJ * PJ}
        extra_ops = {"align": aligns}
    energy = {"dram": dram_bits * acc.dram_pJ_per_bit * PJ, "sram": sram_bits * acc.sram_pJ_per_bit * PJ,
              "datapath": datapath * acc.datapath_pJ * PJ, **extra}
    ops = {"datapath_event": datapath, "mac": macs, **extra_ops}
    b = {"weights": (stored * N * K + scale_bits) / 8, "x": 2 * M * K, "y": 2 * M * N}
    res = {"compute": cycles / acc.clock_Hz}
    return roofline(acc.name, acc.name, res, 0.0, 0.0, b, ops, 2 * macs, energy_J=energy)


def model_gemm(acc, layers, M=32, bits=4) -> Cost:
    """Sum of ``gemm`` over a list of (N, K, count) linear layers: one forward of a model's blocks."""
    parts = [(gemm(acc, N, K, M, bits), count) for N, K, count in layers]
    total = lambda get: sum(get(c) * n for c, n in parts)  # noqa: E731
    first = parts[0][0]
    energy = {k: total(lambda c, k=k: c.energy_J[k]) for k in first.energy_J}
    return Cost(first.method, first.device, total(lambda c: c.time_s),
                {k: total(lambda c, k=k: c.bytes[k]) for k in first.bytes},
                {k: total(lambda c, k=k: c.ops[k]) for k in first.ops},
                {"compute": total(lambda c: c.resources_s["compute"])}, first.binding,
                total(lambda c: c.flops), 0.0, energy)

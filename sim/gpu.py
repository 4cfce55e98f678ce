r"""GEMV/GEMM methods on a GPU: bytes, operations and time of one y[M, N] = x[M, K] W_hat[N, K]^T.

Shape letters as in docs/design.md: N outputs, K inputs, g group, G = K/g, p bits (planes read),
M batch.  Every function takes numbers or numpy arrays (broadcast together) and returns a
``sim.cost.Cost``; constants come from sim/kernels.toml (``kernels=`` to try others).

    method     DRAM bytes                                   per-call work
    fp16       2NK + 2MK + 2MN                               2MNK tensor FLOP
    bcq_lut    pNK/8 + 2pNG + 2MK + 2MN (+ 8 S M N split-K)  lookups, fp32 adds, table builds (below)
    bcq_bmma   pNK/8 + 2pNG + 2MK + 2MN (+ split-K)          one chain of 256-input steps per warp (_bcq_exact)
    bcq_imma   pNK/8 + 2pNG + 2MK + 2MN (+ split-K)          one chain of 128-input steps per warp (one launch of 8 or 16 rows)
    bcq_imma_chunks  bcq_imma once per 16 rows of x           ceil(M/16) launches back to back
    anyprec    pNK/8 + 2 N 2^p + 2MK + 2MN                   bit-transpose ~p, FMA ~M per weight
    bcq_fixed  pNK/8 + 2pNG + 2NG + 2MK + 2MN                as bcq_lut, fp16 tables, bank conflicts
    int4       NK/2 + 4NG + 2MK + 2MN                        unpack per weight, MMA 2 max(M,16) N K
    dequantize pNK/8 + 2pNG + 2NK                            p selects + adds per weight

Our kernel (bcq_lut, gpu/lut_gemv.cu) in the model's terms.  Mp = M rounded up to a power of two,
W = 32/Mp words per tile, L = 32/mu lookups per word; geometry from ``launch_geometry`` (a copy of
gpu/kernels.py's), N_pad = row_tiles x rows, T = tiles of one split, r = rows / 16 rows per warp:

    per (row, plane, tile), one warp, 32 lanes = Mp columns x W words:
        warp instructions  instr_per_word + L instr_per_lookup      (LDG, cvt, FMUL; PRMT, LEA, LDS, FADD)
        smem wavefronts    L                                        (each lane owns a bank: no conflicts)
    per (row, tile): instr_per_row_tile, smem_per_row_tile            (lane tree + split partial)
    per (row tile, tile): table build, 32 lanes x L 2^mu entries x instr_per_table_entry
    issue_s   = warp instructions / (min(blocks, SMs) x 4 schedulers x clock x issue_efficiency)
    smem_s    = wavefronts / (min(blocks, SMs) x clock x smem_efficiency)
    memory_s  = bytes / (DRAM bandwidth x memory_efficiency x min(1, blocks / SMs))
    latency_s = waves x T x (tile_latency + build + p (ceil(r/8) step_latency + r row_step))
                + split_epilogue if split-K           (the dependent chain of one block: measured to bind)

So lookups and adds scale with Mp (M rounded up), plane bytes do not; and because one block per
SM walks a two-deep load pipeline over 16 warps, the measured kernel is latency-bound (docs/sim.md).  Batches
above ``max_batch`` go through dequantize + cuBLAS (``bcq_dequant``).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .cost import Cost, as_arrays, ceil_div, repeat, roofline, select, serial
from .hardware import GPU, get_device
from .kernels import KernelConstants, default_kernels


def _ctx(gpu, kernels) -> tuple[GPU, KernelConstants]:
    gpu = get_device(gpu)
    if not isinstance(gpu, GPU):
        raise TypeError(f"device: {gpu.name} is an accelerator; use sim.accel.gemm")
    return gpu, kernels or default_kernels()


def _check_positive(**arrays):
    for name, a in arrays.items():
        if np.any(~(a > 0)):
            raise ValueError(f"{name}: must be positive, got min {np.min(a)}")


def fp16(gpu, N, K, M=1, *, kernels=None) -> Cost:
    """cuBLAS FP16 GEMV/GEMM: streams W once; tensor cores for the FLOPs."""
    gpu, kc = _ctx(gpu, kernels)
    c = kc.cublas_fp16
    N, K, M = as_arrays(N, K, M)
    _check_positive(N=N, K=K, M=M)
    b = {"weights": 2 * N * K, "x": 2 * M * K, "y": 2 * M * N}
    flops = 2 * M * N * K
    res = {"memory": sum(b.values()) / (gpu.dram_bandwidth_Bps * c.memory_efficiency),
           "tensor": flops / (gpu.fp16_tensor_flops_per_s * c.tensor_efficiency)}
    return roofline("fp16", gpu.name, res, c.fixed_s, gpu.launch_s, b, {"tensor_flop": flops}, flops)


def launch_geometry(gpu, N, K, M, kernels=None):
    """(Mp, W, num_tiles, num_splits, rows, row_tiles) of gpu/kernels.py launch_geometry, vectorised."""
    gpu, kc = _ctx(gpu, kernels)
    c = kc.bcq_lut
    N, K, M = as_arrays(N, K, M)
    Mp = _batch_bucket(M, c.max_batch)
    W = 32 / Mp
    num_tiles = ceil_div(ceil_div(K, 32), W)
    num_splits = ceil_div(num_tiles, (c.split_inputs / 32) / W)
    rows_max = np.minimum(c.max_rows_per_block, c.acc_floats / Mp)
    rows = ceil_div(N, np.maximum(1, np.floor(gpu.sms / num_splits)))
    rows = np.minimum(np.maximum(c.row_quantum, ceil_div(rows, c.row_quantum) * c.row_quantum), rows_max)
    return Mp, W, num_tiles, num_splits, rows, ceil_div(N, rows)


def lut_smem_bytes(mu: int, kernels=None) -> int:
    """Shared memory one block of our kernel needs with mu-bit keys: per-lane tables + buffers."""
    c = (kernels or default_kernels()).bcq_lut
    return 32 * (32 // mu) * 2 ** mu * c.table_entry_bytes + c.smem_other_bytes


def bcq_lut(gpu, N, K, M=1, bits=2, *, g=128, mu=None, kernels=None) -> Cost:
    """Our AnyBCQ LUT-GEMM kernel at precision p = bits (M <= max_batch), else dequantize + cuBLAS."""
    gpu, kc = _ctx(gpu, kernels)
    small, takes = _lut_kernel(gpu, N, K, M, bits, g, mu, kc), np.asarray(M) <= kc.bcq_lut.max_batch
    if np.all(takes):
        return small
    return select("bcq_lut", takes, small, bcq_dequant(gpu, N, K, M, bits, g=g, kernels=kc))


def _lut_kernel(gpu, N, K, M, bits, g, mu, kc) -> Cost:
    """The LUT kernel alone: NaN where M > max_batch (bcq_lut falls back to dequantize + cuBLAS there)."""
    c = kc.bcq_lut
    mu = c.mu if mu is None else int(mu)
    if mu < 1 or 32 % mu:
        raise ValueError(f"mu: must divide 32 (keys are bytes of a 32-bit plane word), got {mu}")
    N, K, M, p = as_arrays(N, K, M, bits)
    _check_positive(N=N, K=K, M=M, bits=p)
    fits = lut_smem_bytes(mu, kc) <= gpu.smem_bytes_per_block_max
    Mp, W, num_tiles, splits, rows, row_tiles = launch_geometry(gpu, N, K, M, kc)
    blocks, N_pad, L = row_tiles * splits, row_tiles * rows, 32 // mu
    warps = c.threads_per_block // 32
    entries_per_lane = L * 2 ** mu
    b = {"planes": p * N * K / 8, "scales": 2 * p * N * (K / g), "x": 2 * M * K, "y": 2 * M * N,
         "workspace": np.where(splits > 1, 8 * splits * M * N, 0.0)}
    steps = N_pad * num_tiles                  # (row, tile) pairs, padded rows included
    builds = row_tiles * num_tiles             # every row tile builds every tile's tables
    warp_instr = steps * (p * (c.instr_per_word + L * c.instr_per_lookup) + c.instr_per_row_tile) \
        + builds * entries_per_lane * c.instr_per_table_entry
    wavefronts = steps * (p * L + c.smem_per_row_tile) + builds * entries_per_lane
    active = np.minimum(blocks, gpu.sms)
    lanes = 32 * steps * p
    ops = {"lut_lookup": lanes * L, "fp32_add": lanes * L, "fp32_mul": lanes, "plane_word_load": lanes,
           "table_entry": 32 * builds * entries_per_lane, "warp_instr": warp_instr}
    # The dependent chain of one block (one block per SM): per tile, build the tables, then per
    # plane walk the warp's rows rows_per_step at a time, each step waiting for its plane words.
    rows_per_warp = rows / warps
    groups = np.ceil(rows_per_warp / c.rows_per_step)
    row_step_bytes = 4 * W + 2 * np.ceil(W / (g / 32))        # one row's plane words + scales in a tile
    row_step_s = active * warps * row_step_bytes / (gpu.dram_bandwidth_Bps * c.memory_efficiency)
    build_s = entries_per_lane * c.instr_per_table_entry / (gpu.schedulers_per_sm * gpu.clock_Hz)
    tile_s = c.tile_latency_s + build_s + p * (groups * c.step_latency_s + rows_per_warp * row_step_s)
    chain = np.ceil(blocks / gpu.sms) * ceil_div(num_tiles, splits) * tile_s + (splits > 1) * c.split_epilogue_s
    res = {"memory": sum(b.values()) / (gpu.dram_bandwidth_Bps * c.memory_efficiency * np.minimum(1, blocks / gpu.sms)),
           "issue": warp_instr / (active * gpu.schedulers_per_sm * gpu.clock_Hz * c.issue_efficiency),
           "smem": wavefronts / (active * gpu.clock_Hz * c.smem_efficiency),
           "latency": chain}
    return roofline("bcq_lut", gpu.name, res, c.fixed_s, gpu.launch_s, b, ops, 2 * M * N * K,
                    supported=fits & (M <= c.max_batch))


def contract_split(N, K, g=128, kernels=None):
    """(split inputs, splits) of reference/exact_mma.py contract_split, vectorised (a test checks it)."""
    c = (kernels or default_kernels()).bcq_bmma
    N, K, g = as_arrays(N, K, g)
    G = np.maximum(1, np.floor(K / g))
    tiles = ceil_div(N, c.rows_per_block)
    choices = [c.split_max_inputs / 2 ** i for i in range(int(np.log2(c.split_max_inputs / c.split_min_inputs)) + 1)]
    split = np.full(np.broadcast(N, K, g).shape, float(choices[-1]))
    for s0 in reversed(choices[:-1]):   # the longest that still makes split_work (tile, split) pairs
        split = np.where(tiles * ceil_div(G, np.floor(s0 / g)) >= c.split_work, s0, split)
    n = ceil_div(G, np.floor(split / g))
    u = np.where(256 % g == 0, 256 / g, 1)                           # groups per 256-input step
    per = ceil_div(G, n)
    return ceil_div(per, u) * u * g, n


def _batch_bucket(M, max_batch):
    """Mp: the batch M rounded up to a power of two (reference.lut_gemv.batch_bucket), at most max_batch."""
    return 2.0 ** np.ceil(np.log2(np.clip(M, 1, max_batch)))


def _bucket_and_step_groups(c, M, g):
    """(Mp, S): the batch bucket and the groups per 256-input step (inf where g does not divide 256)."""
    return _batch_bucket(M, c.max_batch), np.where(256 % g == 0, 256 / np.maximum(g, 1), np.inf)


def _parts(c, gpu, N, splits, p, reduced):
    """Warps per 16-row tile and split: 2 where twice the (16-row tile, split) pairs fit the warp slots."""
    pairs = ceil_div(N, c.rows_per_block / c.warps_per_block) * splits
    return np.where((c.max_parts >= 2) & ~reduced & (p <= c.parts_up_to_planes)
                    & (2 * pairs <= gpu.sms * c.warp_slots_per_sm), 2.0, 1.0)


def bmma_parts(gpu, N, K, M=1, bits=2, *, g=128, kernels=None):
    """gpu/kernels.py bmma_parts at 2-4 planes, vectorised (a test checks it): the parts bcq_bmma is modelled
    with.  The kernel's rule for 1-plane calls (two parts of two tiles per warp) is not modelled."""
    gpu, kc = _ctx(gpu, kernels)
    c = kc.bcq_bmma
    N, K, M, p, g = as_arrays(N, K, M, bits, g)
    Mp, S = _bucket_and_step_groups(c, M, g)
    return _parts(c, gpu, N, contract_split(N, K, g, kc)[1], p, S * Mp > c.reduce_above)


def _bcq_exact(method, gpu, N, K, M, bits, g, kernels) -> Cost:
    """bcq_bmma / bcq_imma: one chain of contract-split steps per warp, waves of resident blocks."""
    gpu, kc = _ctx(gpu, kernels)
    c = getattr(kc, method)
    N, K, M, p, g = as_arrays(N, K, M, bits, g)
    _check_positive(N=N, K=K, M=M, bits=p)
    Mp, S = _bucket_and_step_groups(c, M, g)
    tiles = np.where(M > c.batch_per_launch, c.max_tiles, 1)  # one launch takes the batch (M <= max_batch)
    ok = (p == np.round(p)) & (p <= c.max_planes) & (M <= c.max_batch) & (g <= c.max_group)
    if method == "bcq_bmma":
        ok &= (S * Mp <= c.max_mma_columns)
        reduced = S * Mp > c.reduce_above
    else:
        reduced = p > c.reduce_above
    split, splits = contract_split(N, K, g, kc)
    parts = _parts(c, gpu, N, splits, p, reduced)
    row_tiles = ceil_div(N, c.rows_per_block / parts)
    blocks = row_tiles * splits
    per_sm = np.where(reduced, c.blocks_per_sm_reduced, c.blocks_per_sm)
    waves = ceil_div(blocks, gpu.sms * per_sm)
    steps = split / c.step_inputs / parts                             # steps of one warp's share of a split
    batch_factor = Mp if c.batch_scales_chain else 1.0
    chain = waves * steps * batch_factor * (c.step_latency_s + c.plane_step_latency_s * p
                                            + (tiles - 1) * c.tile_plane_step_latency_s * p)
    b = {"planes": p * N * K / 8, "scales": 2 * p * N * (K / g), "x": 2 * M * K,
         "y": 2 * M * N, "workspace": np.where(splits > 1, 8 * splits * M * N, 0.0)}
    memory = sum(b.values()) / (gpu.dram_bandwidth_Bps * c.memory_efficiency)
    fixed = c.fixed_s + np.where(splits > 1, c.split_finish_s, 0.0)
    warps = blocks * c.warps_per_block
    ops = {"warp_steps": warps * steps, "tensor_mma": warps * steps * p *
           (2 * S * Mp if method == "bcq_bmma" else 2 * tiles * c.step_inputs / 32)}
    return roofline(method, gpu.name, {"memory": memory, "latency": chain}, fixed, gpu.launch_s, b, ops,
                    2 * M * N * K, supported=ok, overlap_norm=c.overlap_norm)


def bcq_bmma(gpu, N, K, M=1, bits=2, *, g=128, kernels=None) -> Cost:
    """Our 1-bit tensor-core kernel (gpu/bmma_gemv.cu): batch bucket x 256/g <= 8, p <= 4, else NaN."""
    return _bcq_exact("bcq_bmma", gpu, N, K, M, bits, g, kernels)


def bcq_imma(gpu, N, K, M=1, bits=2, *, g=128, kernels=None) -> Cost:
    """Our int8 tensor-core kernel (gpu/imma_gemm.cu): M <= 16 in one launch (two tiles of 8 batch rows
    above 8), p <= 4, g <= 256, else NaN."""
    return _bcq_exact("bcq_imma", gpu, N, K, M, bits, g, kernels)


def bcq_imma_chunks(gpu, N, K, M=1, bits=2, *, g=128, kernels=None) -> Cost:
    """bcq_imma once per 16 rows of x, back to back: gpu.bcq_matmul's path past 16 rows (one launch up to 16).

        time = (L - 1) t_imma(16) + t_imma(M - 16 (L - 1)),   L = ceil(M / 16) launches
    """
    gpu, kc = _ctx(gpu, kernels)
    N, K, M, p, g = as_arrays(N, K, M, bits, g)
    per = kc.bcq_imma.max_batch
    launches = ceil_div(M, per)
    full = repeat("bcq_imma", bcq_imma(gpu, N, K, per, p, g=g, kernels=kc), launches - 1)
    last = bcq_imma(gpu, N, K, M - per * (launches - 1), p, g=g, kernels=kc)
    return replace(serial("bcq_imma_chunks", full, last), flops=2 * M * N * K)


def bcq_dequant(gpu, N, K, M=1, bits=2, *, g=128, kernels=None) -> Cost:
    """gpu/dequantize.cu writes fp16 W_hat, then cuBLAS: the large-batch path of bcq_matmul."""
    gpu, kc = _ctx(gpu, kernels)
    return serial("bcq_dequant", dequantize(gpu, N, K, bits, g=g, kernels=kc), fp16(gpu, N, K, M, kernels=kc))


def bcq_auto(gpu, N, K, M=1, bits=2, *, g=128, mu=None, kernels=None) -> Cost:
    """The fastest of our paths per configuration, an ideal dispatcher: the 1-bit and int8 tensor-core
    kernels where they take the call (bcq_bmma as if given its tiles; the int8 one in launches of 16 rows
    past 16), the LUT kernel, dequantize + cuBLAS.  gpu.bcq_matmul picks by fixed thresholds instead;
    gpu.mma_gemm is not modelled."""
    gpu, kc = _ctx(gpu, kernels)
    best = bcq_dequant(gpu, N, K, M, bits, g=g, kernels=kc)
    for path in (_lut_kernel(gpu, N, K, M, bits, g, mu, kc),  # its fallback is the dequantize path above
                 bcq_imma_chunks(gpu, N, K, M, bits, g=g, kernels=kc),
                 bcq_bmma(gpu, N, K, M, bits, g=g, kernels=kc)):
        best = select("bcq_auto", path.time_s < best.time_s, path, best)  # NaN (does not take it) never wins
    return best


def dequantize(gpu, N, K, bits=2, *, g=128, kernels=None) -> Cost:
    """gpu/dequantize.cu: read p planes + scales, write fp16 W_hat [N, K]."""
    gpu, kc = _ctx(gpu, kernels)
    c = kc.dequantize
    N, K, p = as_arrays(N, K, bits)
    b = {"planes": p * N * K / 8, "scales": 2 * p * N * (K / g), "w_fp16": 2 * N * K}
    lane_instr = N * K * (c.instr_per_weight_plane * p + c.instr_per_weight)
    res = {"memory": sum(b.values()) / (gpu.dram_bandwidth_Bps * c.memory_efficiency),
           "issue": lane_instr / gpu.lane_instr_per_s}
    return roofline("dequantize", gpu.name, res, c.fixed_s, gpu.launch_s, b, {"lane_instr": lane_instr}, 0.0 * N)


def anyprec(gpu, N, K, M=1, bits=3, *, kernels=None) -> Cost:
    """Any-Precision LLM (SNU-ARC): planes -> bit-transpose -> per-row centroid lookup -> FMA."""
    gpu, kc = _ctx(gpu, kernels)
    c = kc.anyprec
    N, K, M, p = as_arrays(N, K, M, bits)
    _check_positive(N=N, K=K, M=M, bits=p)
    ok = (p >= c.min_bits) & (p <= c.max_bits) & (p == np.round(p))
    pc = np.clip(np.round(p), c.min_bits, c.max_bits)  # keeps 2^p finite where unsupported
    b = {"planes": pc * N * K / 8, "centroids": c.centroid_bytes * N * 2 ** pc, "x": 2 * M * K, "y": 2 * M * N}
    Ml = np.minimum(M, c.max_batch)
    lane_instr = N * K * (c.instr_per_weight_plane * pc + c.instr_per_weight_column * Ml)
    table_bytes = c.centroid_bytes * 2 ** pc
    conflicts = np.maximum(1.0, table_bytes / (gpu.smem_banks * gpu.smem_bank_bytes))  # > 1 only past 64 entries
    ops = {"bit_transpose": N * K * pc, "centroid_lookup": N * K, "fp16_fma": N * K * Ml, "lane_instr": lane_instr}
    res = {"memory": sum(b.values()) / (gpu.dram_bandwidth_Bps * c.memory_efficiency),
           "issue": lane_instr / gpu.lane_instr_per_s,
           "smem": N * K / 32 * conflicts / gpu.smem_wavefronts_per_s}
    small = roofline("anyprec", gpu.name, res, c.fixed_s, gpu.launch_s, b, ops, 2 * M * N * K, supported=ok)
    if np.all(M <= c.max_batch):
        return small
    # batches past max_batch: its dequantize kernel (assumed to stream like ours) + cuBLAS
    deq_b = {"planes": pc * N * K / 8, "centroids": b["centroids"], "w_fp16": 2 * N * K}
    deq_instr = N * K * (c.instr_per_weight_plane * pc + 1)
    deq_res = {"memory": sum(deq_b.values()) / (gpu.dram_bandwidth_Bps * kc.dequantize.memory_efficiency),
               "issue": deq_instr / gpu.lane_instr_per_s}
    deq = roofline("dequantize", gpu.name, deq_res, kc.dequantize.fixed_s, gpu.launch_s, deq_b,
                   {"lane_instr": deq_instr}, 0.0 * N, supported=ok)
    large = serial("anyprec", deq, fp16(gpu, N, K, M, kernels=kc))
    return select("anyprec", M <= c.max_batch, small, large)


def bcq_fixed(gpu, N, K, M=1, bits=3, *, g=128, kernels=None) -> Cost:
    """LUT-GEMM (fixed-precision BCQ): fp16 tables shared by a block, random keys -> bank conflicts."""
    gpu, kc = _ctx(gpu, kernels)
    c = kc.bcq_fixed
    N, K, M, p = as_arrays(N, K, M, bits)
    _check_positive(N=N, K=K, M=M, bits=p)
    L = 32 // c.mu
    blocks = ceil_div(N, c.rows_per_block) * ceil_div(K, c.inputs_per_block)
    b = {"planes": p * N * K / 8, "scales": 2 * p * N * (K / g), "offsets": 2 * N * (K / g),
         "x": 2 * M * K, "y": 2 * M * N}
    Ml = np.minimum(M, c.max_batch)
    word_cols = N * p * ceil_div(K, 32) * Ml                       # (row, plane, word, column)
    entries = blocks * (c.inputs_per_block / c.mu) * Ml * 2 ** c.mu  # tables built, all blocks
    lane_instr = word_cols * (c.instr_per_word + L * c.instr_per_lookup) + entries * c.instr_per_table_entry
    wavefronts = word_cols * L / 32 * c.bank_conflict_factor + entries / 32
    active = np.minimum(1, blocks / gpu.sms)
    ops = {"lut_lookup": word_cols * L, "fp16_add": word_cols * L, "table_entry": entries, "lane_instr": lane_instr}
    res = {"memory": sum(b.values()) / (gpu.dram_bandwidth_Bps * c.memory_efficiency * active),
           "issue": lane_instr / (gpu.lane_instr_per_s * c.issue_efficiency * active),
           "smem": wavefronts / (gpu.smem_wavefronts_per_s * c.smem_efficiency * active)}
    small = roofline("bcq_fixed", gpu.name, res, c.fixed_s, gpu.launch_s, b, ops, 2 * M * N * K)
    if np.all(M <= c.max_batch):
        return small
    large = serial("bcq_fixed", dequantize(gpu, N, K, p, g=g, kernels=kc), fp16(gpu, N, K, M, kernels=kc))
    return select("bcq_fixed", M <= c.max_batch, small, large)


def int4(gpu, N, K, M=1, bits=4, *, g=128, kernels=None) -> Cost:
    """Uniform INT4 (W4A16) fused dequantize kernel: unpack in registers, tensor-core MMA."""
    gpu, kc = _ctx(gpu, kernels)
    c = kc.int4
    N, K, M, q = as_arrays(N, K, M, bits)
    _check_positive(N=N, K=K, M=M)
    b = {"weights": N * K / 2, "scales": 2 * N * (K / g), "zeros": 2 * N * (K / g), "x": 2 * M * K, "y": 2 * M * N}
    m_tiles = ceil_div(M, c.mma_min_batch)
    lane_instr = N * K * c.dequant_instr_per_weight * m_tiles
    mma_flops = 2 * m_tiles * c.mma_min_batch * N * K
    res = {"memory": sum(b.values()) / (gpu.dram_bandwidth_Bps * c.memory_efficiency),
           "issue": lane_instr / gpu.lane_instr_per_s,
           "tensor": mma_flops / (gpu.fp16_tensor_flops_per_s * kc.cublas_fp16.tensor_efficiency)}
    ops = {"dequant_instr": lane_instr, "tensor_flop": mma_flops}
    return roofline("int4", gpu.name, res, c.fixed_s, gpu.launch_s, b, ops, 2 * M * N * K, supported=(q == 4))


GPU_METHODS = {"fp16": fp16, "bcq_lut": bcq_lut, "bcq_bmma": bcq_bmma, "bcq_imma": bcq_imma,
               "bcq_imma_chunks": bcq_imma_chunks, "bcq_dequant": bcq_dequant, "bcq_auto": bcq_auto,
               "anyprec": anyprec, "bcq_fixed": bcq_fixed, "int4": int4}
ALIASES = {"cublas_fp16": "fp16", "cublas": "fp16", "anybcq": "bcq_lut", "ours": "bcq_lut", "any_precision": "anyprec",
           "any-precision": "anyprec", "lutgemm": "bcq_fixed", "lut_gemm": "bcq_fixed", "awq": "int4",
           "bcq_dequant_cublas": "bcq_dequant", "bmma": "bcq_bmma", "imma": "bcq_imma", "bcq_matmul": "bcq_auto"}


def method_name(name: str) -> str:
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in GPU_METHODS:
        raise ValueError(f"method: unknown method {name!r}; known: {', '.join(GPU_METHODS)} "
                         f"(aliases: {', '.join(ALIASES)})")
    return key


def gemv(gpu, method: str, N, K, M=1, bits=None, **options) -> Cost:
    """Dispatch by method name: fp16 and int4 ignore ``bits`` (int4 needs 4 or None)."""
    m = method_name(method)
    if m == "fp16":
        return fp16(gpu, N, K, M, **options)
    if m == "int4":
        return int4(gpu, N, K, M, 4 if bits is None else bits, **options)
    if m == "dequantize":
        raise ValueError("method: dequantize is a step, not a GEMV; use bcq_dequant")
    if bits is None:
        raise ValueError(f"bits: method {m} needs a precision")
    return GPU_METHODS[m](gpu, N, K, M, bits, **options)

r"""LUT-GEMM GEMV, the exact arithmetic the CUDA kernel (gpu/lut_gemv.cu) reproduces bit for bit.

    y[m, n] = sum_k x[m, k] * W_hat[n, k],   W_hat[n, k] = beta[n, k//g] + sum_{i<p} alpha[i, n, k//g] B_i[n, k]

x float16 [M, K]; planes uint32 [p, N, K/32]; alpha float16 [p, N, G]; beta float16 [N, G] or None;
y float16 [M, N].  Every step below is float32 with round-to-nearest-even, one rounding per
operation, in exactly this order (reference/contract.md is the prose version):

1. Tables, mu = 8.  For every batch row m and byte position c (inputs 8c..8c+7), with x_s the
   activations widened to float32:
       T[0]           = (((-x_0) - x_1) - ...) - x_7
       T[e + 2^s]     = T[e] + 2 x_s          for s = 0..7, e < 2^s
   so T[e] = sum_s (2 bit_s(e) - 1) x_s, built in that order.
2. Per word w of row n (inputs 32w..32w+31) and plane i, with bytes b_0..b_3 (b_0 = bits 0..7):
       q_i = ((T_{4w}[b_0] + T_{4w+1}[b_1]) + T_{4w+2}[b_2]) + T_{4w+3}[b_3]
3. Word partial:  a = alpha_0 q_0;  a = a + alpha_i q_i  (i = 1..p-1; product rounded, then sum);
   with offsets, a = a + beta * X, X being step 2 with every byte 0xFF (the table sum of x).
4. Words are cut into tiles of W = 32 / Mp words (Mp = M rounded up to a power of two <= 32),
   and a tile's partial is the balanced tree of adjacent pairs over its W words (a missing word
   past K contributes +0.0).
5. Tiles are cut into splits of SPLIT_WORDS = 256 words (8192 inputs); a split's partial is the
   sequential sum of its tiles, and y is the sequential sum of the splits.
6. y is rounded to float16 (nearest even; overflow gives +-inf).

Why this order: step 4's tree is what a warp whose lanes each own one word computes in shared
memory, step 5's sums are what one thread block (one split) and the split-K epilogue compute.
Rows never interact, and the order never depends on N or on the launch geometry, only on Mp.
"""
from __future__ import annotations

import numpy as np

from .checks import MAX_LUT_BATCH, check_gemv_args

MU = 8
SPLIT_WORDS = 256


def batch_bucket(M: int) -> int:
    """Mp: M rounded up to a power of two; the kernel (and so the summation tree) depends on it."""
    if not 1 <= M <= MAX_LUT_BATCH:
        raise ValueError(f"x: the LUT kernel takes batch 1..{MAX_LUT_BATCH}, got M={M}")
    return 1 << (M - 1).bit_length()


def build_tables(x: np.ndarray) -> np.ndarray:
    """float16 x [M, K] -> float32 T [M, K/8, 256], step 1 of the contract."""
    M, K = x.shape
    xs = x.astype(np.float32).reshape(M, K // MU, MU)
    T = np.empty((M, K // MU, 1 << MU), dtype=np.float32)
    t0 = -xs[..., 0]
    for s in range(1, MU):
        t0 = t0 - xs[..., s]
    T[..., 0] = t0
    for s in range(MU):
        two_x = (xs[..., s] * np.float32(2))[..., None]
        T[..., 1 << s: 2 << s] = T[..., : 1 << s] + two_x
    return T


def _word_sums(T_m: np.ndarray, byte_idx: np.ndarray) -> np.ndarray:
    """Step 2 for one batch row: T_m [K/8, 256], byte_idx [..., K/8] -> q [..., K/32]."""
    C = T_m.shape[0]
    L = T_m.reshape(-1)[np.arange(C) * 256 + byte_idx]  # one lookup per byte
    return ((L[..., 0::4] + L[..., 1::4]) + L[..., 2::4]) + L[..., 3::4]


def _tree(v: np.ndarray) -> np.ndarray:
    """Balanced tree of adjacent pairs over the last axis (a power of two long)."""
    while v.shape[-1] > 1:
        v = v[..., 0::2] + v[..., 1::2]
    return v[..., 0]


def lut_gemv(x, planes, alpha, beta=None, *, group_size: int) -> np.ndarray:
    """y = x W_hat^T, float16 [M, N], bit-exact with gpu.lut_gemv (see the module docstring)."""
    M, N, K, p, G = check_gemv_args(x.shape, x.dtype, planes.shape, planes.dtype, alpha.shape,
                                    alpha.dtype, None if beta is None else beta.shape,
                                    None if beta is None else beta.dtype, group_size)
    Mp = batch_bucket(M)
    KW, W = K // 32, 32 // Mp
    T = build_tables(x)
    bytes_ = np.ascontiguousarray(planes, dtype="<u4").view(np.uint8).reshape(p, N, K // MU)
    words_per_group = group_size // 32
    al = np.repeat(alpha.astype(np.float32), words_per_group, axis=-1)  # [p, N, KW]
    be = None if beta is None else np.repeat(beta.astype(np.float32), words_per_group, axis=-1)
    n_tiles = -(-KW // W)
    tiles_per_split = SPLIT_WORDS // W
    y = np.empty((M, N), dtype=np.float16)
    for m in range(M):
        q = _word_sums(T[m], bytes_)  # [p, N, KW]
        a = al[0] * q[0]
        for i in range(1, p):
            a = a + al[i] * q[i]
        if be is not None:
            X = _word_sums(T[m], np.full((K // MU,), 255))  # [KW]
            a = a + be * X
        a = np.concatenate([a, np.zeros((N, n_tiles * W - KW), np.float32)], axis=1)
        tiles = _tree(a.reshape(N, n_tiles, W))  # [N, n_tiles]
        acc = None
        for s0 in range(0, n_tiles, tiles_per_split):
            part = tiles[:, s0]
            for t in range(s0 + 1, min(s0 + tiles_per_split, n_tiles)):
                part = part + tiles[:, t]
            acc = part if acc is None else acc + part
        y[m] = acc.astype(np.float16)
    return y

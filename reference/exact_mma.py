r"""Exact-integer BCQ GEMM for batches, the arithmetic gpu/mma_gemm.cu reproduces bit for bit.

    y[m, n] = sum_k x[m, k] W_hat[n, k]        x float16 [M, K], y float16 [M, N]

Tensor cores sum in an unspecified order and with an unspecified internal precision, so a kernel
that feeds them ordinary fp16 activations cannot be reproduced to the bit.  This contract makes
every tensor-core sum an exact integer instead:

1. Activations, per batch row m and group G of g inputs (the weights' group): with
   amax = max |x| over the group and E the exponent with amax = f 2^E, f in [1/2, 1) (E = 0 for an
   all-zero group), the 15-bit fixed-point value is
       fix = rint(x 2^(15 - E))                    |fix| < 2^15 (an int16), rint = round half to even
   split into two fp16-exact digits  fix = 2048 hi + lo,  hi = rint(fix / 2048),  |hi| <= 16, |lo| <= 1024,
   and X = sum_k fix (an integer).  (Values below 2^(E - 16) round to zero: 15 bits below the
   group's largest magnitude; fp16 values of magnitude 2^(E - 5) or more are held exactly.)
2. Per plane i, with beta_ik in {0, 1} the bits:  S_i = sum_k beta_ik fix_k  (exact: the tensor
   cores add integers far below 2^24), and D_i = 2 S_i - X = sum_k b_ik fix_k with b = 2 beta - 1.
3. Group partial (float32, one rounding per operation, in this order):
       a = alpha_0 float(D_0);  a = a + alpha_i float(D_i) for i = 1..p-1;  [a = a + beta float(X)];
       c = a 2^(E - 15)
   (float(.) of D and X is exact: |D|, |X| < g 2^15 <= 2^23.)
4. y = sequential sum of c over the groups of a split, then over the splits.  A split is
   split // g whole groups, split = contract_split(N, K, g) inputs: of the longest of 8192, 4096,
   2048, 1024 that still makes 256 (64-row tile, split) pairs of independent work (else 1024), the
   same number of splits made equal in whole 256-input steps (70B down: 4 x 7168).
5. y rounded to float16.
Rows of x never interact: the result for one row does not depend on the batch size.
"""
from __future__ import annotations

import functools

import numpy as np

from bcq_core.layout import unpack_bits

from .checks import check_gemv_args

FIX_BITS = 15        # step 1: fix is an int16; benchmarks/contract_precision.py measured what F costs
DIGIT = 2048
SPLIT_CHOICES = (8192, 4096, 2048, 1024)  # inputs per split, largest first (multiples of 256)
SPLIT_WORK = 256       # (64-row tile, split) pairs wanted: two blocks for each SM of a 128-SM GPU
SPLIT_ROWS = 64        # rows per tile in that count
STEP_INPUTS = 256      # a split is whole steps of gpu/bmma_gemv.cu's mma (m16n8k256) where g divides 256
MAX_MMA_BATCH = 16
MAX_GROUP = 256


def encode_activations(x: np.ndarray, group_size: int, fix_bits: int = FIX_BITS):
    """float16 x [M, K] -> (fix int64 [M, K], hi, lo float16 [M, K], E int [M, G], X int64 [M, G]).

    fix_bits: F of step 1.  The kernels implement FIX_BITS only (and hi/lo assume it); other values
    serve precision studies (benchmarks/contract_precision.py)."""
    M, K = x.shape
    xs = x.astype(np.float64).reshape(M, K // group_size, group_size)
    _, E = np.frexp(np.abs(xs).max(axis=-1))  # amax = f 2^E, f in [0.5, 1); E = 0 for amax = 0
    fix = np.rint(np.ldexp(xs, (fix_bits - E)[..., None]))
    hi = np.rint(fix / DIGIT)
    lo = fix - hi * DIGIT
    X = fix.sum(axis=-1).astype(np.int64)
    return (fix.reshape(M, K).astype(np.int64), hi.reshape(M, K).astype(np.float16),
            lo.reshape(M, K).astype(np.float16), E.astype(np.int64), X)


@functools.lru_cache(maxsize=None)  # the kernels ask for it on every launch
def contract_split(N: int, K: int, group_size: int, split: int | None = None) -> int:
    """Inputs per split of the contract for an N x K layer (step 4 of the module docstring).

        s0 = split, or the longest of SPLIT_CHOICES with  ceil(N / 64) * ceil(G / (s0 // g)) >= SPLIT_WORK
             (else the shortest)                                         G = K / g groups
        n  = ceil(G / (s0 // g))                                         splits
        q  = u * ceil(ceil(G / n) / u)   groups per split,  u = 256 / g if g divides 256, else 1
        returns q * g

    A pure function of the layer's shape (and of an explicit split), never of the batch or the GPU,
    so the three kernels and this reference agree for every call.  Long splits keep fewer partials;
    short ones give small layers more independent warps (each walks its split's groups in order),
    which the kernels need to fill a GPU: benchmarks/results/split_sweep_*.md.  The n splits are
    then made as equal as whole 256-input steps allow (the 1-bit kernel's step is 256 inputs), because
    a layer takes as long as its longest split: 70B down (K = 28672) is 4 splits of 7168 inputs, not
    3.5 of 8192 whose last, half-length one left its SMs idle half the time.  q never exceeds s0 // g
    and n splits of q groups still cover G, so equalizing changes no split count.
    """
    if not 1 <= group_size <= MAX_GROUP:
        raise ValueError(f"group_size: the exact contract takes groups of 1..{MAX_GROUP} inputs, got {group_size}")
    check_split(split)
    g, G = group_size, max(1, K // group_size)
    if split is None:
        tiles = -(-N // SPLIT_ROWS)
        split = next((s for s in SPLIT_CHOICES if tiles * -(-G // (s // g)) >= SPLIT_WORK), SPLIT_CHOICES[-1])
    n = -(-G // (split // g))                                # splits
    per = -(-G // n)                                         # groups per split, made equal
    u = STEP_INPUTS // g if STEP_INPUTS % g == 0 else 1      # groups per 256-input step
    return -(-per // u) * u * g


def check_split(split) -> None:
    """A caller's split must be one the contract defines (SPLIT_CHOICES) or None; ValueError otherwise."""
    if split is not None and split not in SPLIT_CHOICES:
        raise ValueError(f"split: must be one of {SPLIT_CHOICES} or None, got {split!r}")


def exact_mma_gemm(x, planes, alpha, beta=None, *, group_size: int, split: int | None = None) -> np.ndarray:
    """y = x W_hat^T, float16 [M, N], bit-exact with gpu.mma_gemm (see the module docstring).

    split: inputs per split, one of SPLIT_CHOICES (equalized by contract_split); None means
    contract_split(N, K, group_size)."""
    M, N, K, p, G = check_gemv_args(x.shape, x.dtype, planes.shape, planes.dtype, alpha.shape,
                                    alpha.dtype, None if beta is None else beta.shape,
                                    None if beta is None else beta.dtype, group_size)
    g = group_size
    if M > MAX_MMA_BATCH:
        raise ValueError(f"x: the tensor-core kernel takes batch 1..{MAX_MMA_BATCH}, got M={M}")
    if g > MAX_GROUP:
        raise ValueError(f"group_size: the tensor-core kernel takes groups of at most {MAX_GROUP} inputs "
                         f"(its integer sums must stay below 2^31), got {g}")
    split = contract_split(N, K, g, split)
    fix, _, _, E, X = encode_activations(x, g)
    bits = ((unpack_bits(planes) + 1) // 2).astype(np.float64).reshape(p, N, G, g)  # beta_ik in {0, 1}
    # integer sums, exact in float64 (|S| < 2^23)
    S = np.einsum("inGk,mGk->imnG", bits, fix.reshape(M, G, g).astype(np.float64)).astype(np.int64)
    D = (2 * S - X[None, :, None, :]).astype(np.float32)  # [p, M, N, G], exact (|D| < 2^23)
    al = alpha.astype(np.float32)[:, None]  # [p, 1, N, G]
    a = al[0] * D[0]
    for i in range(1, p):
        a = a + al[i] * D[i]
    if beta is not None:
        a = a + beta.astype(np.float32)[None] * X[:, None, :].astype(np.float32)
    c = np.ldexp(a, (E - FIX_BITS)[:, None, :].astype(np.int32)).astype(np.float32)  # [M, N, G]
    per_split = split // g
    y = None
    for s0 in range(0, G, per_split):
        part = c[..., s0]
        for j in range(s0 + 1, min(s0 + per_split, G)):
            part = part + c[..., j]
        y = part if y is None else y + part
    return y.astype(np.float16)

"""reference/exact_mma.py on the CPU: the split of the contract, and what changing it may change."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bcq_core.random_problems import VALUE_KINDS, random_activations, random_problem
from reference.bitplane import dequant_matmul
from reference.exact_mma import (DIGIT, FIX_BITS, MAX_GROUP, SPLIT_CHOICES, SPLIT_ROWS, SPLIT_WORK,
                                 contract_split, encode_activations, exact_mma_gemm)

GROUPS = [32, 64, 96, 128, 192, 256]


@settings(max_examples=80, deadline=None)
@given(M=st.integers(1, 3), G=st.integers(1, 4), g=st.sampled_from([32, 64, 128, 256]),
       kind=st.sampled_from(VALUE_KINDS), seed=st.integers(0, 2 ** 32 - 1))
def test_step_1_is_an_int16_whose_sums_floats_hold_exactly(M, G, g, kind, seed):
    """What the kernels build on: fix fits an int16 (16 bit-planes, two bytes), hi / lo are fp16-exact
    digits, every group sum is exact in float32 (|X| and every |D| < 2^23), the rounding error is at
    most half a step 2^(E - 15), and fp16 values of magnitude 2^(E - 5) or more are held exactly."""
    x = random_activations(np.random.default_rng(seed), M, G * g, kind)
    fix, hi, lo, E, X = encode_activations(x, g)
    assert -2 ** 15 <= fix.min() and fix.max() < 2 ** 15
    assert np.array_equal(DIGIT * hi.astype(np.int64) + lo.astype(np.int64), fix)
    assert np.abs(hi.astype(np.float64)).max() <= 16 and np.abs(lo.astype(np.float64)).max() <= DIGIT // 2
    assert np.abs(X).max() < 2 ** 23 and np.abs(fix).reshape(M, G, g).sum(-1).max() < 2 ** 23  # bounds |D|
    step = np.repeat(np.ldexp(1.0, E - FIX_BITS), g, axis=1)  # 2^(E - 15) per input
    err = np.abs(fix * step - x.astype(np.float64))
    assert (err <= step / 2).all()
    held = np.abs(x.astype(np.float64)) >= np.repeat(np.ldexp(1.0, E - 5), g, axis=1)
    assert (err[held] == 0).all()


def nominal(N, G, g):
    """The longest choice that leaves SPLIT_WORK independent (64-row tile, split) pairs, else the shortest."""
    def work(s):
        return -(-N // SPLIT_ROWS) * -(-G // (s // g))
    return next((s for s in SPLIT_CHOICES if work(s) >= SPLIT_WORK), SPLIT_CHOICES[-1])


@given(N=st.integers(1, 70000), G=st.integers(1, 600), g=st.sampled_from(GROUPS),
       split=st.sampled_from((None,) + SPLIT_CHOICES))
def test_contract_split_keeps_the_nominal_count_of_splits_and_makes_them_equal(N, G, g, split):
    s0 = nominal(N, G, g) if split is None else split
    got = contract_split(N, g * G, g, split)
    q, u = got // g, (256 // g if 256 % g == 0 else 1)
    assert got % g == 0 and q % u == 0 and got <= s0          # whole groups, whole 256-input steps
    n = -(-G // (s0 // g))
    assert -(-G // q) == n                                    # the same number of splits as the nominal
    assert q - u < -(-G // n) <= q                            # the shortest that covers G in n splits


def test_contract_split_of_the_benchmark_layers():
    """Long splits where the rows alone fill the GPU; short ones for the small layers; equal lengths."""
    assert contract_split(57344, 8192, 128) == 8192   # Llama-3.1-70B gate+up
    assert contract_split(8192, 28672, 128) == 7168   # 70B down: 128 row tiles x 4 equal splits (3.5 x 8192)
    assert contract_split(4096, 14336, 128) == 3584   # 8B down: 4 x 3584 (3.5 x 4096)
    assert contract_split(4096, 4096, 128) == 1024    # 8B o
    assert contract_split(8192, 8192, 128) == 4096    # 70B o


@settings(max_examples=40, deadline=None)
@given(M=st.integers(1, 4), N=st.integers(1, 40), G=st.integers(1, 8), g=st.sampled_from(GROUPS),
       p=st.integers(1, 4), seed=st.integers(0, 2 ** 32 - 1))
def test_the_split_does_not_matter_while_one_split_holds_every_group(M, N, G, g, p, seed):
    K = g * G
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), M, N, K, p, g, with_beta=True)
    ys = [exact_mma_gemm(x, planes, alpha, beta, group_size=g, split=s).view(np.uint16)
          for s in SPLIT_CHOICES if s // g >= G]
    assert all((y == ys[0]).all() for y in ys)


@settings(max_examples=20, deadline=None)
@given(G=st.integers(9, 40), seed=st.integers(0, 2 ** 32 - 1))
def test_every_split_computes_the_same_function(G, seed):
    """Splits only reorder float additions: all stay as close to the float64 product as fp16 allows."""
    g = 128
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), 2, 24, g * G, 3, g, with_beta=True)
    r = dequant_matmul(x, planes, alpha, beta, group_size=g)
    for s in SPLIT_CHOICES:
        y = exact_mma_gemm(x, planes, alpha, beta, group_size=g, split=s).astype(np.float64)
        assert np.linalg.norm(y - r) / np.linalg.norm(r) < 2e-3


def test_bad_splits_and_groups_are_named():
    x, planes, alpha, _ = random_problem(np.random.default_rng(0), 1, 8, 1024, 2, 128)
    with pytest.raises(ValueError, match="split: must be one of"):
        exact_mma_gemm(x, planes, alpha, group_size=128, split=1000)
    with pytest.raises(ValueError, match="group_size: the exact contract takes groups of 1"):
        contract_split(64, 4096, MAX_GROUP * 2)


def test_the_split_rule_counts_the_kernels_row_blocks():
    """contract_split counts (64-row tile, split) pairs because every exact kernel runs 64-row blocks.

    The two numbers live apart on purpose (a kernel's tiling must never change the contract's bytes:
    the split decides only the order of additions, not which rows a block holds), so this test is what
    keeps the rule's work estimate true when a kernel's block height changes: change both, or neither.
    """
    import re
    from pathlib import Path

    from gpu.kernels import EXACT_ROWS_PER_BLOCK

    assert EXACT_ROWS_PER_BLOCK == SPLIT_ROWS
    src = Path(__file__).resolve().parents[1] / "gpu"
    kernels = (("imma_gemm.cu", "kImmaWarps", "kImmaRows"), ("mma_gemm.cu", "kWarpsPerBlock", "kRowsPerWarp"),
               ("bmma_gemv.cu", "kBmmaWarps", "kBmmaRows"))
    for name, warps, rows in kernels:
        text = (src / name).read_text()
        value = {k: int(re.search(rf"constexpr int {k} = (\d+);", text).group(1)) for k in (warps, rows)}
        assert value[warps] * value[rows] == SPLIT_ROWS, name

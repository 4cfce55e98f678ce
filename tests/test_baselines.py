"""Baselines' algebra: RTN as an exact asymmetric BCQ; Any-Precision's nested codebooks."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bcq_core.anyprec import AnyPrecision, anyprec_quantize
from bcq_core.bcq import relative_error
from bcq_core.rtn import rtn_bcq, rtn_dequantize


def weights(seed, N=16, K=256):
    return np.random.default_rng(seed).standard_normal((N, K)).astype(np.float32)


# ---- RTN -----------------------------------------------------------------------------------------------
@given(st.integers(0, 1000))
@settings(max_examples=20, deadline=None)
def test_rtn_error_shrinks_with_bits(seed):
    W = weights(seed)
    errs = [relative_error(W, rtn_dequantize(W, b, 64)) for b in range(1, 7)]
    assert all(a > b for a, b in zip(errs, errs[1:]))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_rtn_bcq_form_equals_the_grid(bits):
    W = weights(bits)
    q = rtn_bcq(W, bits, 64)
    assert q.signs.shape == (bits, 16, 256) and q.precisions == (bits,)
    np.testing.assert_allclose(q.dequantize(bits), rtn_dequantize(W, bits, 64), rtol=0, atol=2e-6)
    alpha = q.alpha[bits]
    np.testing.assert_allclose(alpha[:-1], 2 * alpha[1:], rtol=1e-6)  # powers of two, MSB plane first


def test_rtn_is_exact_on_its_grid_and_within_half_a_step():
    rng = np.random.default_rng(0)
    lo, s = rng.standard_normal((8, 4, 1)), rng.random((8, 4, 1)) + 0.1
    q = rng.integers(0, 8, (8, 4, 64))
    q[..., 0], q[..., 1] = 0, 7  # each group spans the whole grid
    W = (lo + s * q).reshape(8, 256).astype(np.float32)
    np.testing.assert_allclose(rtn_dequantize(W, 3, 64), W, atol=1e-5)
    V = weights(1)
    step = (V.reshape(16, 4, 64).max(-1) - V.reshape(16, 4, 64).min(-1)) / 7
    err = np.abs(rtn_dequantize(V, 3, 64) - V).reshape(16, 4, 64).max(-1)
    assert (err <= step / 2 + 1e-6).all()


def test_rtn_constant_group_and_bad_input():
    W = np.ones((4, 64), np.float32)
    np.testing.assert_array_equal(rtn_dequantize(W, 2, 64), W)
    np.testing.assert_array_equal(rtn_bcq(W, 2, 64).dequantize(2), W)
    with pytest.raises(ValueError, match="bits"):
        rtn_bcq(W, 0, 64)
    with pytest.raises(ValueError, match="group_size"):
        rtn_bcq(np.ones((4, 96), np.float32), 2, 64)


# ---- Any-Precision -----------------------------------------------------------------------------------------
@given(st.integers(0, 1000), st.sampled_from([1, 2, 3]))
@settings(max_examples=15, deadline=None)
def test_child_codes_top_bits_equal_parent_code(seed, seed_bits):
    W = weights(seed, N=8, K=128)
    F = np.random.default_rng(seed + 1).random(W.shape).astype(np.float32)
    q = anyprec_quantize(W, F, seed_bits=seed_bits, top_bits=5, iters=10)
    assert q.precisions == tuple(range(seed_bits, 6))
    for b in range(seed_bits, 5):
        assert np.array_equal(q.code(b), q.code(b + 1) >> 1)  # children 2c, 2c+1 of parent c
        assert (q.code(b) < 2 ** b).all()


def test_centroids_are_weighted_means_and_ascending():
    W, F = weights(3, N=6, K=256), np.random.default_rng(4).random((6, 256)).astype(np.float32) + 0.01
    q = anyprec_quantize(W, F, seed_bits=3, top_bits=4)
    for b in (3, 4):
        c, code = q.centroids[b], q.code(b)
        assert (np.diff(c, axis=1) >= 0).all()
        for n in range(6):
            for k in np.unique(code[n]):
                sel = code[n] == k
                np.testing.assert_allclose(c[n, k], (F[n, sel] * W[n, sel]).sum() / F[n, sel].sum(), rtol=1e-5)


def test_error_falls_with_bits_and_weights_matter():
    W = weights(5, N=32, K=512)
    q = anyprec_quantize(W, seed_bits=2, top_bits=5)
    errs = [relative_error(W, q.dequantize(b)) for b in q.precisions]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    F = np.ones_like(W)
    F[:, :64] = 1000.0  # the first 64 inputs dominate the objective
    qw = anyprec_quantize(W, F, seed_bits=3, top_bits=3)
    e_w = np.abs(qw.dequantize(3) - W)[:, :64].mean()
    e_u = np.abs(anyprec_quantize(W, seed_bits=3, top_bits=3).dequantize(3) - W)[:, :64].mean()
    assert e_w < e_u


def test_kmeans_seed_is_a_lloyd_fixed_point():
    W = weights(6, N=4, K=512)
    q = anyprec_quantize(W, seed_bits=3, top_bits=3, iters=200)
    c = q.centroids[3]
    nearest = np.abs(W[..., None] - c[:, None, :]).argmin(-1)  # (N, K)
    d_assigned = np.abs(W - q.dequantize(3))
    d_nearest = np.abs(W - np.take_along_axis(c, nearest, 1))
    np.testing.assert_allclose(d_assigned, d_nearest, atol=1e-6)


def test_exactly_representable_rows_are_recovered():
    rng = np.random.default_rng(7)
    levels = np.sort(rng.standard_normal((4, 8)), axis=1)
    W = np.take_along_axis(levels, rng.integers(0, 8, (4, 256)), 1).astype(np.float32)
    q = anyprec_quantize(W, seed_bits=3, top_bits=4, iters=100)
    assert relative_error(W, q.dequantize(3)) < 1e-6 or relative_error(W, q.dequantize(4)) < 1e-6


def test_memory_and_bad_input():
    q = anyprec_quantize(weights(8, N=4, K=64), seed_bits=2, top_bits=4)
    assert isinstance(q, AnyPrecision) and q.nbytes(3) == 4 * 64 * 3 // 8 + 2 * 4 * 8
    assert q.nbytes() == 4 * 64 * 4 // 8 + 2 * 4 * (4 + 8 + 16)
    with pytest.raises(ValueError, match="stores precisions"):
        q.dequantize(1)
    with pytest.raises(ValueError, match="seed_bits"):
        anyprec_quantize(weights(0), seed_bits=4, top_bits=3)
    with pytest.raises(ValueError, match="weights"):
        anyprec_quantize(weights(0), -np.ones((16, 256), np.float32))
    with pytest.raises(ValueError, match="weights"):
        anyprec_quantize(weights(0), np.ones((3, 3), np.float32))

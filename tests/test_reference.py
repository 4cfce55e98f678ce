"""reference/: the three GEMV formulations agree, and the LUT contract behaves as documented."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bcq_core.random_problems import VALUE_KINDS, random_problem
from reference.bitplane import bitplane_gemv, dequant_matmul
from reference.dequant import dequantize_fp16
from reference.lut_gemv import batch_bucket, build_tables, lut_gemv

problems = st.tuples(
    st.integers(1, 9),                    # M
    st.integers(1, 12),                   # N
    st.sampled_from([32, 64, 128]),       # g
    st.integers(1, 5),                    # G
    st.integers(1, 4),                    # p
    st.booleans(),                        # beta
    st.integers(0, 2 ** 32 - 1),          # seed
)


@settings(max_examples=60, deadline=None)
@given(problems)
def test_three_paths_agree(prob):
    M, N, g, G, p, with_beta, seed = prob
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), M, N, g * G, p, g, with_beta=with_beta)
    r1 = dequant_matmul(x, planes, alpha, beta, group_size=g)
    r2 = bitplane_gemv(x, planes, alpha, beta, group_size=g)
    y = lut_gemv(x, planes, alpha, beta, group_size=g).astype(np.float64)
    scale = np.abs(x.astype(np.float64)) @ np.abs(dequant_matmul(np.eye(g * G), planes, alpha, beta, group_size=g))
    np.testing.assert_allclose(r1, r2, rtol=0, atol=1e-9 * (1 + scale.max()))
    # fp16 output rounding (2^-11 relative) plus float32 accumulation error bounded by the absolute sum
    assert np.all(np.abs(y - r1) <= 2.0 ** -11 * np.abs(r1) + 1e-5 * scale + 2.0 ** -24)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2 ** 32 - 1))
def test_tables_are_signed_partial_sums(M, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, 16)).astype(np.float16)
    T = build_tables(x)  # [M, 2, 256]
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1  # [256, 8]
    exact = np.einsum("es,mcs->mce", 2.0 * bits - 1, x.astype(np.float64).reshape(M, 2, 8))
    np.testing.assert_allclose(T, exact, rtol=0, atol=8 * 2.0 ** -24 * np.abs(x).astype(np.float64).sum())
    for s in range(8):  # the doubling recurrence holds to the bit
        two_x = (x.astype(np.float32).reshape(M, 2, 8)[..., s] * 2)[..., None]
        assert (T[..., 1 << s: 2 << s] == T[..., : 1 << s] + two_x).all()


def test_identity_activations_give_dequantized_weights_as_bytes():
    rng = np.random.default_rng(0)
    N, K, g, p = 24, 256, 64, 3
    _, planes, alpha, beta = random_problem(rng, 1, N, K, p, g, with_beta=True)
    Wq = dequantize_fp16(planes, alpha, beta, group_size=g)  # [N, K]
    for k0 in range(0, K, 32):  # 32 one-hot rows per call
        x = np.zeros((32, K), np.float16)
        x[np.arange(32), k0 + np.arange(32)] = 1
        y = lut_gemv(x, planes, alpha, beta, group_size=g)  # [32, N]
        got, want = y.view(np.uint16), Wq[:, k0:k0 + 32].T.copy().view(np.uint16)
        # +0.0 and -0.0 are the only pair allowed to differ (an exact zero weight)
        assert ((got == want) | ((got | want) == 0x8000) & (((got ^ want) & 0x7FFF) == 0)).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 32), st.integers(0, 2 ** 32 - 1))
def test_rows_are_independent_within_a_batch_bucket(M, seed):
    rng = np.random.default_rng(seed)
    Mp = batch_bucket(M)
    x, planes, alpha, _ = random_problem(rng, Mp, 5, 512, 2, 128)
    full = lut_gemv(x, planes, alpha, group_size=128)
    part = lut_gemv(x[Mp - M:], planes, alpha, group_size=128) if batch_bucket(M) == Mp else None
    assert (full[Mp - M:].view(np.uint16) == part.view(np.uint16)).all()


@pytest.mark.parametrize("kind", VALUE_KINDS)
def test_adversarial_values_stay_finite_where_the_true_result_is(kind):
    rng = np.random.default_rng(1)
    x, planes, alpha, beta = random_problem(rng, 2, 8, 1024, 3, 128, kind=kind)
    y = lut_gemv(x, planes, alpha, beta, group_size=128).astype(np.float64)
    r = dequant_matmul(x, planes, alpha, beta, group_size=128)
    assert np.isfinite(y[np.abs(r) < 65000]).all()
    assert np.isinf(y[np.abs(r) > 66000]).all()
    small = np.abs(r) < 65000
    assert np.all(np.abs(y - r)[small] <= 2.0 ** -10 * np.abs(r)[small] + 2.0 ** -20 * np.abs(r).max() + 2.0 ** -24)


def test_bad_arguments_are_named():
    rng = np.random.default_rng(0)
    x, planes, alpha, beta = random_problem(rng, 2, 4, 256, 2, 128)
    with pytest.raises(ValueError, match="^x:"):
        lut_gemv(x.astype(np.float32), planes, alpha, group_size=128)
    with pytest.raises(ValueError, match="^x: K must match"):
        lut_gemv(x[:, :128], planes, alpha, group_size=128)
    with pytest.raises(ValueError, match="^planes:"):
        lut_gemv(x, planes.astype(np.int32), alpha, group_size=128)
    with pytest.raises(ValueError, match="^group_size:"):
        lut_gemv(x, planes, alpha, group_size=96)
    with pytest.raises(ValueError, match="^alpha:"):
        lut_gemv(x, planes, alpha[:1], group_size=128)
    with pytest.raises(ValueError, match="^beta:"):
        lut_gemv(x, planes, alpha, np.zeros((4, 3), np.float16), group_size=128)
    with pytest.raises(ValueError, match="batch 1..32"):
        lut_gemv(np.zeros((33, 256), np.float16), planes, alpha, group_size=128)

"""bcq_core.lstsq and the lower envelope: least-squares scales are optimal, finite on singular groups."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bcq_core.alternating import assign, envelope
from bcq_core.lstsq import lstsq_scales

SHAPES = st.sampled_from([32, 64, 128, 256]).flatmap(  # (N, K, g), g dividing K
    lambda K: st.tuples(st.integers(1, 8), st.just(K), st.sampled_from([g for g in (32, 64, 128, 256) if K % g == 0])))
SEEDS = st.integers(0, 2 ** 32 - 1)


def design(signs, g, offset):
    """X float64 [N, G, g, m]: the planes of every group as columns (+ a ones column when offset)."""
    p, N, K = signs.shape
    X = signs.reshape(p, N, K // g, g).transpose(1, 2, 3, 0).astype(np.float64)
    return np.concatenate([X, np.ones(X.shape[:-1] + (1,))], axis=-1) if offset else X


def group_objective(W, X, x, d, g):
    """sum_k d_k (w_k - X x)^2 per group, float64 [N, G]; x [N, G, m]."""
    N, K = W.shape
    r = W.reshape(N, K // g, g).astype(np.float64) - np.einsum("ngkm,ngm->ngk", X, x)
    return (d.reshape(K // g, g) * r * r).sum(-1)


def random_problem(seed, N, K, p, weighted):
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1, 1], dtype=np.int8), size=(p, N, K))
    W = (rng.standard_t(4, size=(N, K)) * rng.uniform(0.01, 10)).astype(np.float32)
    d = None
    if weighted:
        d = rng.exponential(size=K) * (rng.random(K) > 0.2)  # some inputs carry no weight
        d[0] = 1.0
    return signs, W, d


@settings(max_examples=40, deadline=None)
@given(SHAPES, st.integers(1, 5), st.booleans(), st.booleans(), SEEDS)
def test_ls_scales_are_optimal(shape, p, offset, weighted, seed):
    N, K, g = shape
    signs, W, d = random_problem(seed, N, K, p, weighted)
    alpha, beta = lstsq_scales(signs, W, g, d, offset)
    assert np.isfinite(alpha).all() and (beta is None) == (not offset)
    x = alpha.transpose(1, 2, 0)
    if offset:
        x = np.concatenate([x, beta[..., None]], axis=-1)
    X = design(signs, g, offset)
    dd = np.ones(K) if d is None else d
    d_eff = np.where(dd.reshape(K // g, g).sum(1, keepdims=True) > 0, dd.reshape(K // g, g), 1.0).reshape(K)
    E = group_objective(W, X, x, d_eff, g)
    scale = (d_eff.reshape(K // g, g) * W.reshape(N, K // g, g).astype(np.float64) ** 2).sum(-1) + 1e-300
    rng = np.random.default_rng(seed + 1)
    directions = list(np.eye(x.shape[-1])) + list(rng.standard_normal((4, x.shape[-1])))
    for delta in directions:  # no step in any direction lowers the objective (it is quadratic: any size will do)
        for eps in (1e-3, -1e-3, 1e-6, -1e-6):
            E2 = group_objective(W, X, x + eps * max(np.abs(x).max(), 1.0) * delta, d_eff, g)
            assert np.all(E2 >= E - 1e-10 * scale)


@settings(max_examples=30, deadline=None)
@given(SHAPES, st.integers(1, 4), st.booleans(), SEEDS)
def test_ls_matches_numpy_lstsq(shape, p, offset, seed):
    N, K, g = shape
    signs, W, d = random_problem(seed, N, K, p, weighted=True)
    alpha, beta = lstsq_scales(signs, W, g, d, offset)
    X = design(signs, g, offset)
    sd = np.sqrt(d.reshape(K // g, g))
    for n in range(N):
        for j in range(K // g):
            A = X[n, j] * sd[j][:, None]
            if sd[j].sum() == 0 or np.linalg.matrix_rank(A) < A.shape[1] or np.linalg.cond(A) > 1e6:
                continue  # singular groups have many solutions: covered below
            ref = np.linalg.lstsq(A, W[n, j * g:(j + 1) * g].astype(np.float64) * sd[j], rcond=None)[0]
            got = np.append(alpha[:, n, j], beta[n, j]) if offset else alpha[:, n, j]
            np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())


def test_singular_groups_are_finite_and_exact():
    g, N = 32, 4
    rng = np.random.default_rng(0)
    B0 = rng.choice(np.array([-1, 1], dtype=np.int8), size=(N, g))
    W = np.stack([np.zeros(g), np.full(g, 0.75), 0.5 * B0[2], -0.25 * B0[3]]).astype(np.float32)
    # every row has planes (B0, B0, -B0): duplicated and opposite planes, rank 1
    signs = np.stack([B0, B0, -B0])
    for offset in (False, True):
        alpha, beta = lstsq_scales(signs, W, g, offset=offset)
        assert np.isfinite(alpha).all()
        W_hat = (alpha[:, :, 0, None] * signs).sum(0) + (beta if offset else 0)
        np.testing.assert_allclose(W_hat[[0, 2, 3]], W[[0, 2, 3]], atol=1e-7)  # in the span of the planes
        if offset:
            np.testing.assert_allclose(W_hat[1], W[1], atol=1e-7)  # constant: the offset's span
    # all importance on inputs where the planes agree: singular weighted system, still finite
    d = np.zeros(g)
    d[:3] = 1.0
    alpha, _ = lstsq_scales(rng.choice(np.array([-1, 1], dtype=np.int8), size=(5, N, g)), W, g, d)
    assert np.isfinite(alpha).all()


def test_ls_rejects_bad_arguments():
    W = np.zeros((3, 64), np.float32)
    with pytest.raises(ValueError, match="^signs"):
        lstsq_scales(np.ones((2, 3, 32), dtype=np.int8), W, 32)
    with pytest.raises(ValueError, match="^g: must divide K=64"):
        lstsq_scales(np.ones((2, 3, 64), dtype=np.int8), W, 96)
    with pytest.raises(ValueError, match="^importance"):
        lstsq_scales(np.ones((2, 3, 64), dtype=np.int8), W, 32, importance=np.ones(63))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 64), SEEDS)
def test_envelope_finds_the_lowest_line(n_lines, seed):
    """The branch-free search over the envelope gives a code whose line is lowest at every w (ties allowed)."""
    rng = np.random.default_rng(seed)
    n = 1 << (n_lines - 1).bit_length()  # a power of two >= n_lines, as the quantizers pass 2^p
    a = np.round(rng.standard_normal(n_lines), 1)  # repeated slopes happen
    c0 = rng.standard_normal(n_lines)
    order, hull, breaks = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.empty(n)
    m = envelope(a, c0, n_lines, order, hull, breaks)
    assert np.all(np.diff(breaks[:m - 1]) > 0)
    w = np.concatenate([rng.standard_normal(200) * 3, breaks[:m - 1], [-np.inf, np.inf]])
    codes = np.zeros(w.size, dtype=np.uint8)
    assign(w, hull, breaks, m, n, 0, codes)
    f = c0[None, :] - 2 * a[None, :] * np.clip(w, -1e6, 1e6)[:, None]
    got = f[np.arange(w.size), codes]
    assert np.all(got <= f.min(1) + 1e-9 * (1 + np.abs(f).max(1)))

"""bcq_core.quantize: what goes in (dtypes, checks with named errors) and what comes out."""
import numpy as np
import pytest

from bcq_core.bcq import BCQ, relative_error
from bcq_core.layout import pack, unpack
from bcq_core.quantize import QuantConfig, quantize, quantize_fixed

W = np.random.default_rng(0).standard_normal((4, 128)).astype(np.float32)


@pytest.mark.parametrize("method", ["progressive", "joint"])
@pytest.mark.parametrize("asymmetric", [False, True])
def test_output_shapes_dtypes_and_packing(method, asymmetric):
    q = quantize(W, QuantConfig(bits=(2, 3, 4), group_size=64, iters=3, method=method, asymmetric=asymmetric))
    assert isinstance(q, BCQ) and q.signs.dtype == np.int8 and q.signs.shape == (4, 4, 128)
    assert set(np.unique(q.signs)) <= {-1, 1}
    for p in (2, 3, 4):
        assert q.alpha[p].dtype == np.float32 and q.alpha[p].shape == (p, 4, 2)
        assert (q.beta is not None) == asymmetric and (not asymmetric or q.beta[p].shape == (4, 2))
    assert q.meta["method"] == method and q.meta["source_dtype"] == "float32"
    u = unpack(pack(q))  # fp16 scales in the file: the error moves by about 2^-11 relative
    for p in (2, 3, 4):
        assert abs(relative_error(W, u.dequantize(p)) - relative_error(W, q.dequantize(p))) < 1e-3


def test_fixed_gives_one_bcq_per_precision():
    out = quantize_fixed(W, QuantConfig(bits=(1, 2, 3), group_size=32, iters=2))
    assert sorted(out) == [1, 2, 3]
    for p, q in out.items():
        assert q.signs.shape == (p, 4, 128) and q.precisions == (p,) and q.meta["method"] == "fixed"


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float_dtypes(dtype):
    q = quantize(W.astype(dtype), QuantConfig(bits=(2,), iters=2))
    assert q.meta["source_dtype"] == np.dtype(dtype).name and relative_error(W, q.dequantize(2)) < 0.5


def test_torch_bfloat16():
    torch = pytest.importorskip("torch")
    Wt = torch.tensor(W).to(torch.bfloat16)
    q = quantize(Wt, QuantConfig(bits=(2,), iters=2))
    ref = quantize(Wt.float().numpy(), QuantConfig(bits=(2,), iters=2))  # bf16 widens exactly
    assert q.meta["source_dtype"] == "bfloat16"
    np.testing.assert_array_equal(q.signs, ref.signs)


def test_ml_dtypes_bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    q = quantize(W.astype(ml_dtypes.bfloat16), QuantConfig(bits=(2,), iters=2))
    assert q.meta["source_dtype"] == "bfloat16"


def test_degenerate_matrices_are_exact():
    Z = np.zeros((3, 64), np.float32)
    C = np.full((3, 64), 0.125, np.float32)
    for M in (Z, C):
        for method in ("progressive", "joint"):
            q = quantize(M, QuantConfig(bits=(2, 3), group_size=32, method=method))
            for p in (2, 3):
                assert np.isfinite(q.alpha[p]).all()
                np.testing.assert_array_equal(q.dequantize(p), M)


def test_zero_importance_group_is_fitted_unweighted():
    d = np.ones(128)
    d[:64] = 0.0  # no weight on the first group: any answer is optimal, the plain fit is returned
    q = quantize(W, QuantConfig(bits=(2,), group_size=64, iters=3), importance=d)
    ref = quantize(W, QuantConfig(bits=(2,), group_size=64, iters=3))
    np.testing.assert_array_equal(q.alpha[2][:, :, 0], ref.alpha[2][:, :, 0])


BAD_CONFIGS = [
    (dict(bits=(2, 4)), ValueError, "^bits"),
    (dict(bits=(0, 1)), ValueError, "^bits"),
    (dict(bits=(9,)), ValueError, "^bits"),
    (dict(bits="abc"), TypeError, "^bits"),
    (dict(group_size=100), ValueError, "^group_size"),
    (dict(group_size=0), ValueError, "^group_size"),
    (dict(group_size=128.0), TypeError, "^group_size"),
    (dict(iters=-1), ValueError, "^iters"),
    (dict(iters=True), TypeError, "^iters"),
    (dict(method="gptq"), ValueError, "^method"),
    (dict(asymmetric="yes"), TypeError, "^asymmetric"),
    (dict(joint_weights=(1, 1)), ValueError, "^joint_weights"),
    (dict(joint_weights=(1, -1, 1)), ValueError, "^joint_weights"),
    (dict(joint_weights=(0, 0, 0)), ValueError, "^joint_weights"),
    (dict(joint_weights=(1, float("nan"), 1)), ValueError, "^joint_weights"),
    (dict(joint_weights={2: 1, 3: 1}), ValueError, "^joint_weights"),
    (dict(joint_weights=("a", 1, 1)), TypeError, "^joint_weights"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_CONFIGS)
def test_bad_config(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        QuantConfig(**kwargs)


def test_joint_weights_mapping_is_normalised():
    assert QuantConfig(joint_weights={4: 4, 2: 1, 3: 2}).joint_weights == (1.0, 2.0, 4.0)


def _with(value, **where):
    M = W.copy()
    M[where.get("at", (0, 0))] = value
    return M


BAD_INPUTS = [
    (dict(W=W[0]), ValueError, "^W: must be 2-D"),
    (dict(W=W[None]), ValueError, "^W: must be 2-D"),
    (dict(W=W[:, :0]), ValueError, "^W: must be non-empty"),
    (dict(W=_with(np.nan)), ValueError, "^W: must contain only finite"),
    (dict(W=_with(np.inf)), ValueError, "^W: must contain only finite"),
    (dict(W=W.astype(np.int32)), TypeError, "^W: dtype"),
    (dict(W=W.tolist()), TypeError, "^W: must be an array"),
    (dict(W=W[:, :96]), ValueError, "^group_size: must divide K=96"),
    (dict(config="progressive"), TypeError, "^config"),
    (dict(importance=np.ones(127)), ValueError, "^importance: must have shape"),
    (dict(importance=np.ones((1, 128))), ValueError, "^importance: must have shape"),
    (dict(importance=np.full(128, np.nan)), ValueError, "^importance: must be finite"),
    (dict(importance=-np.ones(128)), ValueError, "^importance: must be >= 0"),
    (dict(importance=np.zeros(128)), ValueError, "^importance: must not be all zero"),
    (dict(importance=np.ones(128, dtype=bool)), TypeError, "^importance"),
    (dict(importance=np.array(["a"] * 128)), TypeError, "^importance"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_INPUTS)
@pytest.mark.parametrize("entry", [quantize, quantize_fixed])
def test_bad_input(entry, kwargs, exc, match):
    args = dict(W=W, config=QuantConfig(bits=(2,), iters=1), importance=None) | kwargs
    with pytest.raises(exc, match=match):
        entry(args["W"], args["config"], importance=args["importance"])


def test_quantize_refuses_fixed_method():
    with pytest.raises(ValueError, match="^method: 'fixed'.*quantize_fixed"):
        quantize(W, QuantConfig(method="fixed"))

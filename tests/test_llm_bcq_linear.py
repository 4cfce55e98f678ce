"""BCQLinear: forward = dequantized matmul, precision switching, scale training, packed round trips."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from bcq_core.bcq import BCQ
from bcq_core.layout import pack, tile_planes
from bcq_core.rtn import rtn_bcq
from llm.bcq_linear import BCQLinear, tile_planes_torch, unpack_planes, untile_planes_torch

torch.set_num_threads(2)


def random_bcq(rng, N=48, K=128, P=4, g=64, precisions=(2, 3, 4), asymmetric=False) -> BCQ:
    signs = rng.choice(np.array([-1, 1], np.int8), size=(P, N, K))
    alpha = {p: (np.abs(rng.standard_normal((p, N, K // g))) * 0.05).astype(np.float32) for p in precisions}
    beta = {p: (rng.standard_normal((N, K // g)) * 0.01).astype(np.float32) for p in precisions} if asymmetric else None
    return BCQ(signs=signs, alpha=alpha, group_size=g, beta=beta)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_forward_equals_dequantized_matmul(asymmetric):
    rng = np.random.default_rng(0)
    q = random_bcq(rng, asymmetric=asymmetric)
    bias = torch.randn(48)
    m = BCQLinear.from_bcq(q, bias)
    x = torch.randn(3, 5, 128)
    unpacked = pack(q)  # float16 scales, as the module stores them
    for p in (2, 3, 4):
        m.set_precision(p)
        W = torch.from_numpy(BCQ(signs=q.signs, alpha={p: unpacked.alpha[p].astype(np.float32)}, group_size=64,
                                 beta=None if not asymmetric else {p: unpacked.beta[p].astype(np.float32)})
                             .dequantize(p))
        torch.testing.assert_close(m.dequantize(p), W, rtol=0, atol=1e-7)
        torch.testing.assert_close(m(x), x @ W.T + bias, rtol=1e-5, atol=1e-6)


def test_unpack_planes_matches_layout():
    rng = np.random.default_rng(1)
    q = random_bcq(rng, P=3, precisions=(3,))
    words = torch.from_numpy(pack(q).planes.view(np.int32))
    assert torch.equal(unpack_planes(words, torch.int8), torch.from_numpy(q.signs))


def test_precision_switching_and_errors():
    m = BCQLinear.from_bcq(random_bcq(np.random.default_rng(2)))
    x = torch.randn(4, 128)
    outs = {}
    for p in (2, 3, 4):
        m.set_precision(p)
        outs[p] = m(x)
    assert not torch.equal(outs[2], outs[4])
    m.set_precision(2)
    assert torch.equal(m(x), outs[2])  # the cache follows the precision
    with pytest.raises(ValueError, match="stores precisions"):
        m.set_precision(5)
    with pytest.raises(TypeError):
        m.set_precision(2.0)


def test_packed_round_trip_is_bit_exact():
    q = pack(random_bcq(np.random.default_rng(3), asymmetric=True))
    back = BCQLinear.from_bcq(q).to_packed()
    assert np.array_equal(back.planes, q.planes)
    for p in q.precisions:
        assert back.alpha[p].tobytes() == q.alpha[p].tobytes()
        assert back.beta[p].tobytes() == q.beta[p].tobytes()


def test_float_and_half_keep_packed_dtypes():
    m = BCQLinear.from_bcq(random_bcq(np.random.default_rng(4)))
    before = m.alpha(3).clone()
    m.float()
    assert m.alpha(3).dtype == torch.float16 and torch.equal(m.alpha(3), before)
    m.half()
    assert m.planes.dtype == torch.int32 and m.alpha(3).dtype == torch.float16


def test_rtn_is_served_exactly():
    rng = np.random.default_rng(5)
    W = rng.standard_normal((32, 128)).astype(np.float32)
    q = rtn_bcq(W, 3, 64)
    m = BCQLinear.from_bcq(q)
    ref = torch.from_numpy(BCQ(signs=q.signs, alpha={3: q.alpha[3].astype(np.float16).astype(np.float32)},
                               group_size=64, beta={3: q.beta[3].astype(np.float16).astype(np.float32)})
                           .dequantize(3))
    torch.testing.assert_close(m.dequantize(3), ref, rtol=0, atol=1e-7)


def test_scale_training_moves_only_scales():
    m = BCQLinear.from_bcq(random_bcq(np.random.default_rng(6)))
    planes = m.planes.clone()
    (alpha,) = m.train_scales(3)
    assert alpha.requires_grad and alpha.dtype == torch.float32
    x = torch.randn(8, 128)
    m(x).pow(2).sum().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    with torch.no_grad():
        alpha.mul_(0.5)
    m.finish_scale_training()
    assert torch.equal(m.planes, planes)
    assert m.alpha(3).dtype == torch.float16
    torch.testing.assert_close(m.alpha(3).float(), alpha.detach().half().float())
    assert m._train is None


def test_bad_construction():
    with pytest.raises(ValueError, match="group_size"):
        BCQLinear(96, 8, 4, (2, 3, 4), 64)
    with pytest.raises(ValueError, match="precisions"):
        BCQLinear(128, 8, 2, (2, 3), 64)


def test_nbytes():
    m = BCQLinear.from_bcq(random_bcq(np.random.default_rng(7)))  # N=48, K=128, g=64, P=4
    plane = 48 * 128 // 8
    assert m.nbytes(2) == 2 * plane + 2 * 48 * 2 * 2
    assert m.nbytes() == 4 * plane + 2 * 48 * 2 * (2 + 3 + 4)


@settings(max_examples=40, deadline=None)
@given(P=st.integers(1, 5), N=st.integers(1, 70), KW=st.integers(1, 20), seed=st.integers(0, 2 ** 32 - 1))
def test_torch_tiling_is_the_layouts_and_round_trips(P, N, KW, seed):
    """tile_planes_torch gives bcq_core.layout.tile_planes' words; untile_planes_torch gives the planes back."""
    words = np.random.default_rng(seed).integers(0, 2 ** 32, size=(P, N, KW), dtype=np.uint32)
    planes = torch.from_numpy(words.view(np.int32))
    tiles = tile_planes_torch(planes)
    assert np.array_equal(tiles.numpy().view(np.uint32), tile_planes(words))
    assert torch.equal(untile_planes_torch(tiles, N, KW), planes)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_tile_layout_changes_nothing_but_the_memory_layout(asymmetric):
    """A module keeping its planes in the tile layout computes the same bytes, saves the same state_dict
    (row-major planes), exports the same packed weight, loads a checkpoint and trains its scales."""
    q = random_bcq(np.random.default_rng(3), N=40, K=320, g=64, asymmetric=asymmetric)
    rows = BCQLinear.from_bcq(q, torch.randn(40))
    tiled = BCQLinear.from_bcq(q, rows.bias.data).use_tile_layout()
    assert tiled.tiled and tiled.planes.shape == (4, 3, 2, 128) and tiled.num_planes == 4
    assert torch.equal(tiled.tiles(), tile_planes_torch(rows.planes).view(torch.uint32))
    x = torch.randn(3, 320)
    for p in (2, 3, 4):
        rows.set_precision(p)
        tiled.set_precision(p)
        assert torch.equal(tiled(x), rows(x))
    sd_rows, sd_tiled = rows.state_dict(), tiled.state_dict()
    assert sd_rows.keys() == sd_tiled.keys() and all(torch.equal(sd_rows[k], sd_tiled[k]) for k in sd_rows)
    assert np.array_equal(tiled.to_packed().planes, rows.to_packed().planes)

    other = BCQLinear.from_bcq(random_bcq(np.random.default_rng(4), N=40, K=320, g=64, asymmetric=asymmetric),
                               torch.randn(40)).use_tile_layout()
    other.load_state_dict(sd_rows)  # a row-major checkpoint into a tiled module
    assert torch.equal(other.planes, tiled.planes) and torch.equal(other(x), tiled(x))

    params = tiled.train_scales(3)  # scale training reads the planes row-major
    rows.set_precision(3)
    assert torch.equal(tiled(x), rows(x)) and len(params) == (2 if asymmetric else 1)
    tiled.finish_scale_training()
    assert tiled.use_tile_layout() is tiled and tiled.planes.shape == (4, 3, 2, 128)  # idempotent


def test_tiled_plane_limit_is_the_tensor_core_kernels():
    """BCQLinear tiles on CUDA exactly the modules the tile-reading kernels serve (gpu.kernels needs no GPU)."""
    from gpu.kernels import IMMA_PLANES
    from llm.bcq_linear import TILED_MAX_PLANES

    assert TILED_MAX_PLANES == max(IMMA_PLANES)
    m = BCQLinear.from_bcq(random_bcq(np.random.default_rng(5), N=40, K=320, g=64, asymmetric=False)).half()
    assert not m.tiled and m.planes.dtype == torch.int32  # only a move to CUDA tiles; dtype casts do not

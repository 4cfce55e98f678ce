"""bcq_core.layout: bit convention, pack/unpack and official-layout round trips (bit-exact), validation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bcq_core.bcq import BCQ
from bcq_core.layout import (PackedBCQ, from_official, pack, pack_bits, tile_planes, tile_shape, to_official, unpack,
                              unpack_bits, untile_planes)

FAST = settings(max_examples=30, deadline=None)


def random_packed(seed, P=3, N=4, K=64, g=32, precisions=(1, 2, 3), offsets=False) -> PackedBCQ:
    rng = np.random.default_rng(seed)
    planes = rng.integers(0, 2 ** 32, size=(P, N, K // 32), dtype=np.uint64).astype(np.uint32)
    alpha = {p: rng.standard_normal((p, N, K // g)).astype(np.float16) for p in precisions}
    beta = {p: rng.standard_normal((N, K // g)).astype(np.float16) for p in precisions} if offsets else None
    return PackedBCQ(planes=planes, alpha=alpha, group_size=g, beta=beta)


def assert_same(a: PackedBCQ, b: PackedBCQ):
    """Bit-exact equality: planes, every scale's bytes, offsets, group size."""
    assert a.group_size == b.group_size and a.planes.dtype == b.planes.dtype == np.uint32
    assert np.array_equal(a.planes, b.planes)
    assert a.alpha.keys() == b.alpha.keys()
    for p in a.alpha:
        assert a.alpha[p].dtype == b.alpha[p].dtype and a.alpha[p].tobytes() == b.alpha[p].tobytes()
    assert (a.beta is None) == (b.beta is None)
    for p in a.beta or {}:
        assert a.beta[p].tobytes() == b.beta[p].tobytes()


# ------------------------------------------------------------------------- bit convention

def test_bit_convention_hand_made():
    """Bit t of word w is input 32 w + t; a set bit is +1."""
    signs = -np.ones((1, 64), dtype=np.int8)
    signs[0, [0, 3, 31, 33]] = 1
    words = pack_bits(signs)
    assert words.dtype == np.uint32 and words.shape == (1, 2)
    assert words[0, 0] == (1 << 0) | (1 << 3) | (1 << 31) == 0x80000009
    assert words[0, 1] == 1 << 1
    assert np.array_equal(unpack_bits(words), signs)
    # little-endian on disk: byte 0 of word 0 holds inputs 0..7
    assert words.astype("<u4").tobytes()[:4] == bytes([0x09, 0x00, 0x00, 0x80])


def test_all_ones_and_all_minus_ones():
    assert (pack_bits(np.ones((2, 32), np.int8)) == 0xFFFFFFFF).all()
    assert (pack_bits(-np.ones((2, 32), np.int8)) == 0).all()


def test_official_bit_convention_hand_made():
    """qweight[k, b, n] bit t = plane b of input 32 k + t for output n."""
    signs = -np.ones((2, 3, 64), dtype=np.int8)  # P=2, N=3, K=64
    signs[1, 2, 32 + 5] = 1                      # plane 1, output 2, input 37
    q = pack(BCQ(signs=signs, alpha={2: np.ones((2, 3, 2), np.float32)}, group_size=32))
    qw = to_official(q)["qweight"]
    assert qw.dtype == np.int32 and qw.shape == (2, 2, 3)  # [K/32, P, N]
    expected = np.zeros((2, 2, 3), np.int32)
    expected[1, 1, 2] = 1 << 5
    assert np.array_equal(qw, expected)
    assert to_official(q)["alpha_2"].shape == (2, 2, 3)    # [G, p, N]


# ------------------------------------------------------------------------- round trips

@FAST
@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=2), words=st.integers(1, 4), seed=st.integers(0, 2 ** 31))
def test_pack_bits_round_trip(lead, words, seed):
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1, 1], np.int8), size=(*lead, 32 * words))
    w = pack_bits(signs)
    assert w.shape == (*lead, words) and w.dtype == np.uint32
    assert np.array_equal(unpack_bits(w), signs)
    raw = rng.integers(0, 2 ** 32, size=(*lead, words), dtype=np.uint64).astype(np.uint32)
    assert np.array_equal(pack_bits(unpack_bits(raw)), raw)


@FAST
@given(seed=st.integers(0, 2 ** 31), P=st.integers(1, 4), N=st.integers(1, 5), G=st.integers(1, 3),
       g=st.sampled_from([32, 64]), offsets=st.booleans())
def test_pack_unpack_round_trip(seed, P, N, G, g, offsets):
    q = random_packed(seed, P=P, N=N, K=G * g, g=g, precisions=tuple(range(1, P + 1)), offsets=offsets)
    b = unpack(q)
    assert b.signs.shape == (P, N, G * g) and set(np.unique(b.signs)) <= {-1, 1}
    assert_same(pack(b), q)


@FAST
@given(seed=st.integers(0, 2 ** 31), P=st.integers(1, 4), N=st.integers(1, 5), G=st.integers(1, 3),
       g=st.sampled_from([32, 64]), offsets=st.booleans())
def test_official_round_trip(seed, P, N, G, g, offsets):
    q = random_packed(seed, P=P, N=N, K=G * g, g=g, precisions=tuple(range(1, P + 1)), offsets=offsets)
    off = to_official(q)
    assert off["qweight"].shape == (G * g // 32, P, N)
    assert np.array_equal(off["qweight"].view(np.uint32), q.planes.transpose(2, 0, 1))
    assert_same(from_official(off, group_size=g), q)


def test_bcq_pack_unpack_keeps_fp16_scales_exactly():
    rng = np.random.default_rng(0)
    signs = rng.choice(np.array([-1, 1], np.int8), size=(3, 2, 64))
    alpha = {p: rng.standard_normal((p, 2, 2)).astype(np.float16).astype(np.float32) for p in (2, 3)}
    b = unpack(pack(BCQ(signs=signs, alpha=alpha, group_size=32)))
    assert np.array_equal(b.signs, signs)
    assert all(np.array_equal(b.alpha[p], alpha[p]) for p in alpha)


def test_arrays_for_reads_the_first_p_planes():
    q = random_packed(1, offsets=True)
    planes, alpha, beta = q.arrays_for(2)
    assert np.shares_memory(planes, q.planes) and planes.shape[0] == 2
    assert alpha is q.alpha[2] and beta is q.beta[2]
    with pytest.raises(ValueError, match="^p: this model stores precisions"):
        q.arrays_for(4)


# ------------------------------------------------------------------------- validation

def _kw(**over):
    rng = np.random.default_rng(0)
    kw = dict(planes=rng.integers(0, 2 ** 31, size=(3, 2, 2)).astype(np.uint32),
              alpha={p: np.ones((p, 2, 2), np.float16) for p in (2, 3)}, group_size=32)
    kw.update(over)
    return kw


@pytest.mark.parametrize("over, match", [
    (dict(planes=np.zeros((3, 2, 2), np.int32)), "^planes: must be uint32"),
    (dict(planes=np.zeros((2, 2), np.uint32)), "^planes: must be uint32"),
    (dict(planes=[[[1]]]), "^planes: must be uint32"),
    (dict(planes=np.zeros((3, 0, 2), np.uint32), alpha={2: np.ones((2, 0, 2), np.float16)}),
     "^planes: every dimension must be positive"),
    (dict(group_size=48), "^group_size: must be a positive multiple of 32"),
    (dict(group_size=0), "^group_size"),
    (dict(group_size=128), "^group_size: .* dividing K=64"),
    (dict(alpha={}), "^alpha: must be a non-empty dict"),
    (dict(alpha={4: np.ones((4, 2, 2), np.float16)}), "^alpha: precision 4 needs 4 planes, only 3"),
    (dict(alpha={2: np.ones((2, 2, 2), np.float32)}), r"^alpha\[2\]: must be float16"),
    (dict(alpha={2: np.ones((2, 2, 3), np.float16)}), r"^alpha\[2\]: must be float16 \(2, 2, 2\)"),
    (dict(alpha={2: np.full((2, 2, 2), np.nan, np.float16)}), r"^alpha\[2\]: must be finite"),
    (dict(beta={2: np.zeros((2, 2), np.float16)}), r"^beta: precisions \[2\] must match"),
    (dict(beta={2: np.zeros((2, 3), np.float16), 3: np.zeros((2, 2), np.float16)}), r"^beta\[2\]: must be float16"),
    (dict(beta={2: np.zeros((2, 2), np.float16), 3: np.full((2, 2), np.inf, np.float16)}), r"^beta\[3\]: must be finite"),
])
def test_packed_validation(over, match):
    with pytest.raises(ValueError, match=match):
        PackedBCQ(**_kw(**over))


def test_pack_bits_rejects_partial_words():
    with pytest.raises(ValueError, match="^signs: last axis must be a multiple of 32"):
        pack_bits(np.ones((2, 40), np.int8))


def test_from_official_rejects_bad_input():
    with pytest.raises(ValueError, match="^tensors: missing 'qweight'"):
        from_official({"alpha_2": np.ones((1, 2, 2), np.float16)}, group_size=32)
    with pytest.raises(ValueError, match="^qweight: must be int32"):
        from_official({"qweight": np.zeros((1, 2, 2), np.uint32)}, group_size=32)
    off = to_official(random_packed(0))
    off["alpha_2"] = off["alpha_2"][:, :1]
    with pytest.raises(ValueError, match=r"^alpha\[2\]"):
        from_official(off, group_size=32)


def test_docs_format_worked_example():
    """docs/format.md: signs + - - + + + - - then 24 minus signs pack to 0x00000039."""
    from bcq_core.layout import pack_bits, unpack_bits
    signs = np.array([+1, -1, -1, +1, +1, +1, -1, -1] + [-1] * 24, dtype=np.int8)
    word = pack_bits(signs)
    assert word.dtype == np.uint32 and word.tolist() == [0x39]
    assert (unpack_bits(word) == signs).all()


# --- the tile layout of the 1-bit tensor-core kernel -------------------------------------------
@FAST
@given(seed=st.integers(0, 2 ** 31), P=st.integers(1, 4), N=st.integers(1, 40), KW=st.integers(1, 20))
def test_tile_planes_round_trip_and_index_map(seed, P, N, KW):
    rng = np.random.default_rng(seed)
    planes = rng.integers(0, 2 ** 32, size=(P, N, KW), dtype=np.uint64).astype(np.uint32)
    tiles = tile_planes(planes)
    assert tiles.shape == tile_shape(P, N, KW) == (P, -(-N // 16), -(-KW // 8), 128) and tiles.dtype == np.uint32
    assert (untile_planes(tiles, N, KW) == planes).all()
    i, n, w = rng.integers(P), rng.integers(N), rng.integers(KW)   # the docstring's formula, at one element
    gid, h, t, e = n % 8, (n % 16) // 8, (w % 8) // 2, w % 2
    assert tiles[i, n // 16, w // 8, 64 * e + 8 * gid + 2 * t + h] == planes[i, n, w]
    # every stored word appears once, the padding is zero
    assert np.count_nonzero(tiles) == np.count_nonzero(planes)
    assert np.sort(tiles[tiles != 0]).tolist() == np.sort(planes[planes != 0]).tolist()


@FAST
@given(seed=st.integers(0, 2 ** 31), p=st.integers(1, 3))
def test_tiles_are_plane_major_like_the_packed_layout(seed, p):
    """A p-bit request reads the first p planes of the tiles: tiling commutes with taking a prefix."""
    planes = np.random.default_rng(seed).integers(0, 2 ** 32, size=(4, 21, 9), dtype=np.uint64).astype(np.uint32)
    assert (tile_planes(planes)[:p] == tile_planes(planes[:p])).all()


def test_tile_of_a_warp_holds_its_mma_fragments():
    """Lane 4 gid + t reads 8 bytes from each half: words 2t, then 2t+1, of rows gid and gid + 8 (mma order)."""
    planes = (np.arange(16)[:, None] * 1000 + np.arange(8)[None, :]).astype(np.uint32)[None]  # word = 1000 row + col
    halves = tile_planes(planes)[0, 0, 0].reshape(2, 32, 2)
    for gid in range(8):
        for t in range(4):
            (a0, a1), (a2, a3) = halves[0, 4 * gid + t], halves[1, 4 * gid + t]
            assert (a0, a1, a2, a3) == (1000 * gid + 2 * t, 1000 * (gid + 8) + 2 * t,
                                        1000 * gid + 2 * t + 1, 1000 * (gid + 8) + 2 * t + 1)


def test_tile_planes_rejects_bad_input():
    with pytest.raises(ValueError, match="planes: must be uint32"):
        tile_planes(np.zeros((2, 3), np.uint32))
    with pytest.raises(ValueError, match="tiles: must be uint32"):
        untile_planes(np.zeros((1, 1, 1, 128), np.uint32), 17, 8)   # 17 rows need two 16-row tiles

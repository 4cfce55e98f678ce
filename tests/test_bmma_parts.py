"""gpu.kernels.bmma_parts and bmma_tiles_per_warp, the 1-bit kernel's choices of warps per 16-row tile and
split and of 16-row tiles per warp: pure functions of the call's shape and the GPU's SM count, so they are
tested here without a GPU (the kernel's bytes for every choice are tested by tests/test_gpu_kernels.py)."""
from hypothesis import given, strategies as st

from gpu.kernels import (BMMA_PARTS_UP_TO_PLANES, BMMA_TWO_TILES_EVERYWHERE_UP_TO_PLANES, BMMA_TWO_TILES_UP_TO_PLANES,
                         BMMA_WARP_SLOTS, bmma_parts, bmma_parts_choices, bmma_tiles_choices, bmma_tiles_per_warp,
                         bmma_variants)
from reference.exact_mma import contract_split

H200_SMS = 132


def _parts(N, K, g=128, M=1, p=2, sms=H200_SMS):
    return bmma_parts(M, N, K, g, p, contract_split(N, K, g), sms)


def test_small_layers_share_their_splits_large_ones_do_not():
    # 70B o: 512 16-row tiles x 2 splits = 1024 warps, half an H200's 2112 slots -> 2 parts fill them
    assert _parts(8192, 8192) == 2
    # 8B down: 256 tiles x 4 splits -> 2
    assert _parts(4096, 14336) == 2
    # 70B gate+up (3584 tiles x 1 split) and 70B down (512 x 4) already fill the slots
    assert _parts(57344, 8192) == 1
    assert _parts(8192, 28672) == 1
    # 4 planes: one part (2 measured slower or the same)
    assert _parts(8192, 8192, p=3) == 2 and _parts(8192, 8192, p=4) == 1
    # 1 plane, two tiles per warp: 2 parts wherever the pairs themselves fit (70B down's 2048 of 2112 slots)
    assert _parts(8192, 28672, p=1) == 2 and _parts(10240, 8192, p=1) == 2 and _parts(57344, 8192, p=1) == 1


def test_only_the_small_variants_have_parts():
    assert bmma_parts_choices(2, 1) == (1, 2)       # g = 128, batch 1
    assert bmma_parts_choices(1, 2) == (1, 2)       # g = 256, batch 2
    assert bmma_parts_choices(2, 2) == (1,)         # g = 128, batch 2: registers allow 2 blocks per SM
    assert _parts(64, 2048, M=2, sms=8) == 1


def _tiles(N, K, g=128, M=1, p=2, sms=H200_SMS):
    return bmma_tiles_per_warp(M, N, K, g, p, contract_split(N, K, g), sms)


def test_two_tiles_per_warp_where_one_warp_per_pair_takes_more_than_a_wave():
    # 70B gate+up: 3584 16-row tiles x 1 split > 2112 warp slots -> two tiles per warp, at 1 and 2 bits
    assert _tiles(57344, 8192) == 2 and _tiles(57344, 8192, p=1) == 2
    assert _tiles(57344, 8192, p=3) == 1 and _tiles(57344, 8192, p=4) == 1
    # the Llama-3 LM head (128256 x 8192): 8016 pairs
    assert _tiles(128256, 8192) == 2
    # 70B down (512 x 4 = 2048 pairs), 8B gate+up (1792), 70B q/k/v: within one wave -> one tile
    assert _tiles(8192, 28672) == 1 and _tiles(28672, 4096) == 1 and _tiles(10240, 8192) == 1
    # batch 2, and layers with two parts, take one tile per warp
    assert _tiles(57344, 8192, M=2) == 1 and _tiles(8192, 8192) == 1
    # 1 plane: two tiles on every layer, with two parts where the pairs fit one wave
    assert all(_tiles(N, K, p=1) == 2 for N, K in ((8192, 8192), (8192, 28672), (10240, 8192), (4096, 4096)))
    assert _tiles(8192, 8192, p=1, g=64) == 1     # g = 64: not compiled
    # a smaller GPU has fewer slots: 8B gate+up is more than a wave on 40 SMs
    assert _tiles(28672, 4096, sms=40) == 2


def test_two_tiles_only_where_compiled():
    assert bmma_tiles_choices(2, 1) == (1, 2)       # g = 128, batch 1 (with one part or two: below)
    assert bmma_tiles_choices(1, 1) == (1, 2)       # g = 256, batch 1
    assert bmma_tiles_choices(1, 2) == (1,)         # batch 2 (it would spill)
    assert bmma_tiles_choices(4, 1) == (1,)         # g = 64: 2 blocks per SM
    assert bmma_tiles_choices(2, 1, 2) == (1, 2) and bmma_tiles_choices(2, 1, 3) == (1,)  # a call's planes: at most 2
    assert sorted(v for v in bmma_variants() if v[3] == 2) == [(1, 1, 1, 2), (1, 1, 2, 2), (2, 1, 1, 2), (2, 1, 2, 2)]


@given(N=st.integers(1, 200000), KG=st.integers(1, 400), g=st.sampled_from([32, 64, 128, 256]),
       M=st.sampled_from([1, 2]), p=st.integers(1, 4), sms=st.integers(1, 200))
def test_parts_and_tiles_exactly_where_they_are_compiled_and_fit(N, KG, g, M, p, sms):
    """2 parts where twice the (16-row tile, split) pairs fit the warp slots; 2 tiles per warp where the
    pairs exceed them, at most 2 planes; at 1 plane 2 tiles everywhere, with 2 parts where the pairs fit;
    each only where its variant is compiled."""
    K, S = KG * g, 256 // g
    if S * M > 8:
        return
    split = contract_split(N, K, g)
    pairs = -(-N // 16) * -(-(K // g) // (split // g))
    slots = sms * BMMA_WARP_SLOTS
    q = bmma_parts(M, N, K, g, p, split, sms)
    assert q in bmma_parts_choices(S, M)
    thin = p <= BMMA_TWO_TILES_EVERYWHERE_UP_TO_PLANES and 2 in bmma_tiles_choices(S, M)
    fits = pairs <= slots if thin else p <= BMMA_PARTS_UP_TO_PLANES and 2 * pairs <= slots
    assert q == (2 if 2 in bmma_parts_choices(S, M) and fits else 1)
    r = bmma_tiles_per_warp(M, N, K, g, p, split, sms)
    assert r in bmma_tiles_choices(S, M)
    wide = thin or (p <= BMMA_TWO_TILES_UP_TO_PLANES and pairs > slots)
    assert r == (2 if 2 in bmma_tiles_choices(S, M) and wide else 1)
    if r == 2 and q == 2:          # two parts of two tiles: as many warps as pairs, within one wave
        assert p == 1 and pairs <= slots

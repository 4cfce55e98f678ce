"""gpu.kernels.bmma_parts, the 1-bit kernel's choice of warps per 16-row tile and split: a pure function
of the call's shape and the GPU's SM count, so it is tested here without a GPU (the kernel's bytes for
every choice are tested by tests/test_gpu_kernels.py)."""
from hypothesis import given, strategies as st

from gpu.kernels import BMMA_PARTS_UP_TO_PLANES, BMMA_WARP_SLOTS, bmma_parts, bmma_parts_choices
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


def test_only_the_small_variants_have_parts():
    assert bmma_parts_choices(2, 1) == (1, 2)       # g = 128, batch 1
    assert bmma_parts_choices(1, 2) == (1, 2)       # g = 256, batch 2
    assert bmma_parts_choices(2, 2) == (1,)         # g = 128, batch 2: registers allow 2 blocks per SM
    assert _parts(64, 2048, M=2, sms=8) == 1


@given(N=st.integers(1, 60000), KG=st.integers(1, 400), g=st.sampled_from([32, 64, 128, 256]),
       M=st.sampled_from([1, 2]), p=st.integers(1, 4), sms=st.integers(1, 200))
def test_two_parts_exactly_where_they_are_compiled_and_fit(N, KG, g, M, p, sms):
    K = KG * g
    S = 256 // g
    if S * M > 8:
        return
    split = contract_split(N, K, g)
    q = bmma_parts(M, N, K, g, p, split, sms)
    assert q in bmma_parts_choices(S, M)
    pairs = -(-N // 16) * -(-(K // g) // (split // g))
    fits = 2 in bmma_parts_choices(S, M) and p <= BMMA_PARTS_UP_TO_PLANES and 2 * pairs <= sms * BMMA_WARP_SLOTS
    assert q == (2 if fits else 1)

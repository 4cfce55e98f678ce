"""gpu.kernels.imma_mode, how imma_gemm.cu's template parameter MODE is chosen from the group size: each
mode assumes how the contract's groups fall on the kernel's 4-word (128-input) steps, and this checks those
assumptions on every group size the kernel takes, without a GPU (the kernel's bytes in every mode are
tested by tests/test_gpu_kernels.py)."""
from hypothesis import given, strategies as st

from gpu.kernels import (IMMA_INSTANCES, IMMA_MODES, IMMA_STEP as STEP, IMMA_TILE, MAX_GROUP,
                         imma_mode, imma_tiles)


def _group_ends_per_step(g: int, groups: int) -> list[int]:
    """How many groups end in each step of a split of `groups` groups of g inputs (the split starts a group)."""
    ends = [0] * -(-groups * g // STEP)
    for j in range(groups):
        ends[((j + 1) * g - 1) // STEP] += 1
    return ends


@given(words=st.integers(1, MAX_GROUP // 32), groups=st.integers(1, 64))
def test_each_mode_holds_what_the_kernel_assumes(words, groups):
    g = 32 * words
    mode = imma_mode(g)
    assert mode in IMMA_MODES
    ends = _group_ends_per_step(g, groups)
    if mode == 2:    # a step is exactly one group
        assert ends == [1] * groups
    elif mode == 1:  # at most one group ends in a step
        assert max(ends) <= 1
    else:            # groups smaller than a step (several may end in one)
        assert g < STEP


def test_the_modes_by_group_size():
    assert [imma_mode(g) for g in (32, 64, 96, 128, 160, 192, 256)] == [0, 0, 0, 2, 1, 1, 1]


@given(M=st.integers(1, 16), p=st.integers(1, 4), g=st.sampled_from([32, 64, 96, 128, 192, 256]))
def test_one_launch_takes_every_batch_and_its_kernel_is_compiled(M, p, g):
    nt = imma_tiles(M)
    assert nt * IMMA_TILE >= M and (nt - 1) * IMMA_TILE < M    # as few 8-row tiles as hold the batch
    assert (p, imma_mode(g), nt) in IMMA_INSTANCES

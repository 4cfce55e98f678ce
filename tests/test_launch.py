"""gpu/launch.py's host side, which needs no GPU: the kernel argument marshalling and the struct
layouts the driver reads.  The overlapped launch itself is run by tests/test_gpu_kernels.py."""
import ctypes

import numpy as np
import pytest

from gpu import launch


class _FakeDeviceArray:
    class _Mem:
        def __init__(self, ptr):
            self.ptr = ptr

    def __init__(self, ptr):
        self.data = self._Mem(ptr)


def test_kernel_params_marshal_pointers_and_ints():
    values = launch.kernel_params((_FakeDeviceArray(0x1000), np.uint64(0), np.int32(-7), np.int32(2**31 - 1)))
    assert [type(v) for v in values] == [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32]
    assert values[0].value == 0x1000 and values[1].value is None  # c_void_p(0) reads back as None
    assert values[2].value == -7 and values[3].value == 2**31 - 1


@pytest.mark.parametrize("bad", [7, 1.5, np.int64(3), np.float32(1.0), None])
def test_kernel_params_refuse_other_types(bad):
    with pytest.raises(TypeError, match=r"args\[1\]: must be a device array"):
        launch.kernel_params((np.int32(1), bad))


def test_struct_layouts_match_cuda_h():
    # CUlaunchAttribute: id (4) + pad (4) + a 64-byte union; CUlaunchConfig: 7 uints, then 8-byte aligned
    # stream and attrs pointers and the attribute count (cuda.h, CUDA 12 and 13)
    assert ctypes.sizeof(launch._LaunchAttribute) == 72
    assert launch._LaunchAttribute.value.offset == 8
    assert launch._LaunchConfig.hStream.offset == 32
    assert launch._LaunchConfig.attrs.offset == 40
    assert launch._LaunchConfig.numAttrs.offset == 48
    assert ctypes.sizeof(launch._LaunchConfig) == 56


def test_plain_launch_when_overlap_is_not_asked():
    calls = []
    launch.launch(lambda grid, block, args: calls.append((grid, block, args)), (3, 2), (128,), (np.int32(1),),
                  stream=None, device_id=0, after_previous=False)
    assert calls == [((3, 2), (128,), (np.int32(1),))]


@pytest.mark.parametrize("argv", [[], ["maybe", "1", "1", "1"], ["on", "1", "x", "1"], ["on", "1", "1"]])
def test_launch_repeat_says_how_to_call_it(argv):
    from benchmarks import launch_repeat
    with pytest.raises(SystemExit, match="usage: python -m benchmarks.launch_repeat on|off"):
        launch_repeat.main(argv)


def test_launch_repeat_problem_has_nine_splits_and_the_kernels_dtypes():
    from bcq_core.random_problems import random_problem
    from benchmarks.launch_repeat import SHAPE
    from reference.exact_mma import contract_split

    x, planes, alpha, beta = random_problem(np.random.default_rng(0), *SHAPE, with_beta=True)
    assert (x.dtype, planes.dtype, alpha.dtype, beta.dtype) == (np.float16, np.uint32, np.float16, np.float16)
    assert x.shape == (2, 8960) and planes.shape == (3, 700, 280) and alpha.shape == (3, 700, 70)
    assert beta.shape == (700, 70) and np.isfinite(x).all()
    groups_per_split = contract_split(700, 8960, 128) // 128
    assert -(-70 // groups_per_split) == 9  # every call goes through the split-K workspace

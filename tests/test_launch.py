"""gpu/launch.py's host side, which needs no GPU: the kernel argument marshalling and the launch
configuration the driver reads.  The overlapped launch itself is run by tests/test_gpu_kernels.py."""
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
    values, types = launch.kernel_params((_FakeDeviceArray(0x1000), np.uint64(0), np.int32(-7), np.int32(2**31 - 1)))
    assert values == (0x1000, 0, -7, 2**31 - 1)
    assert types == (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)


@pytest.mark.parametrize("bad", [7, 1.5, np.int64(3), np.float32(1.0), None])
def test_kernel_params_refuse_other_types(bad):
    with pytest.raises(TypeError, match=r"args\[1\]: must be a device array"):
        launch.kernel_params((np.int32(1), bad))


def test_dependent_launch_config_asks_for_programmatic_serialization():
    driver = pytest.importorskip("cuda.bindings.driver", reason="cuda-bindings not installed (the gpu extra has it)")
    config = launch.dependent_launch_config(driver, (3, 2), (128,), 0x1234)
    assert (config.gridDimX, config.gridDimY, config.gridDimZ) == (3, 2, 1)
    assert (config.blockDimX, config.blockDimY, config.blockDimZ) == (128, 1, 1)
    assert int(config.hStream) == 0x1234 and config.sharedMemBytes == 0 and config.numAttrs == 1
    attr = config.attrs[0]
    assert attr.id == driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
    assert attr.value.programmaticStreamSerializationAllowed == 1


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

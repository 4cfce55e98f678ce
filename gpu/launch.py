"""Kernel launches that may start before the previous kernel on the stream has finished.

Every exact tensor-core GEMV is two kernels: an encoder (x -> activation fragments, E, X), then the
GEMM that reads them.  Launched one after the other, the GEMM's launch, block set-up and first
weight loads wait for the encoder's last block.  On sm_90 and later a *programmatic dependent
launch* (CUDA's ``CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION``) lets the GEMM's blocks
start as soon as every encoder block has signalled (``griddepcontrol.launch_dependents``, first
thing in the encoder); the GEMM then waits (``griddepcontrol.wait``, in
``dependent_launch.cuh``) for the encoder to finish and its writes to be visible before it reads
one encoded word.  Only the wait moves earlier work; the bytes cannot change.  gpu/kernels.py
launches the 1-bit kernel this way (bmma_gemv: 0.97-1.10x, median 1.04x, on the H200) and not the
int8 and fp16 ones, which measured slower (0.66-1.03x) or the same with it (docs/kernels.md).

CuPy launches through ``cuLaunchKernel``, which takes no launch attributes, so the overlapped launch
calls the driver's ``cuLaunchKernelEx`` through NVIDIA's Python bindings (``cuda.bindings.driver``,
package cuda-bindings, which the ``gpu`` extra installs).  It is captured into CUDA graphs like
any launch.  Where it is unavailable (a GPU before sm_90, no cuda-bindings) or ``OVERLAP`` is
False, the plain CuPy launch runs instead: same kernel, same result.
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np

OVERLAP = True  # set False to launch every kernel in plain stream order (for A/B timing)


@functools.lru_cache(maxsize=None)
def _driver():
    """cuda.bindings.driver, or None where cuda-bindings is not installed."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return None
    return driver


@functools.lru_cache(maxsize=None)
def _can_overlap(device_id: int) -> bool:
    import cupy
    major = cupy.cuda.Device(device_id).compute_capability[:-1]
    return int(major) >= 9 and _driver() is not None


def kernel_params(args) -> tuple:
    """A kernel's arguments as cuda.bindings takes them, ``(values, ctypes types)``: device arrays
    (CuPy, anything with ``.data.ptr``) and np.uint64 as pointers, np.int32 as int."""
    values, types = [], []
    for i, a in enumerate(args):
        if hasattr(a, "data") and hasattr(a.data, "ptr"):
            values.append(int(a.data.ptr)); types.append(ctypes.c_void_p)
        elif isinstance(a, np.uint64):
            values.append(int(a)); types.append(ctypes.c_void_p)
        elif isinstance(a, np.int32):
            values.append(int(a)); types.append(ctypes.c_int32)
        else:
            raise TypeError(f"args[{i}]: must be a device array, np.uint64 (pointer) or np.int32, "
                            f"got {type(a).__name__}")
    return tuple(values), tuple(types)


def dependent_launch_config(driver, grid, block, stream_ptr: int):
    """The CUlaunchConfig of a launch on `stream_ptr` that may overlap the previous kernel there."""
    config = driver.CUlaunchConfig()
    config.gridDimX, config.gridDimY, config.gridDimZ = tuple(grid) + (1,) * (3 - len(grid))
    config.blockDimX, config.blockDimY, config.blockDimZ = tuple(block) + (1,) * (3 - len(block))
    config.sharedMemBytes = 0
    config.hStream = driver.CUstream(stream_ptr)
    attr = driver.CUlaunchAttribute()
    attr.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
    attr.value.programmaticStreamSerializationAllowed = 1
    config.attrs = [attr]
    config.numAttrs = 1
    return config


def launch(function, grid, block, args, *, stream, device_id: int, after_previous: bool = False):
    """function(grid, block, args) on `stream` (function: a cupy.RawKernel); after_previous=True
    lets it start before the previous kernel on the stream finishes (that kernel must trigger, this
    one wait: see above)."""
    if not (after_previous and OVERLAP and _can_overlap(device_id)):
        function(grid, block, args)
        return
    driver = _driver()
    config = dependent_launch_config(driver, grid, block, stream.ptr)
    handle = driver.CUfunction(function.kernel.ptr)  # cupy.RawKernel -> its loaded CUfunction
    (err,) = driver.cuLaunchKernelEx(config, handle, kernel_params(args), 0)
    if err != driver.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"cuLaunchKernelEx failed: {err.name}")

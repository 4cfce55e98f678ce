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
calls the driver's ``cuLaunchKernelEx`` through ctypes.  It is captured into CUDA graphs like any
launch.  Where it is unavailable (a GPU before sm_90, a driver without ``cuLaunchKernelEx``) or
``OVERLAP`` is False, the plain CuPy launch runs instead: same kernel, same result.
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np

OVERLAP = True  # set False to launch every kernel in plain stream order (for A/B timing)

_PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CUlaunchAttributeID, cuda.h


class _LaunchAttribute(ctypes.Structure):
    # CUlaunchAttribute: a 4-byte id, 4 bytes of padding, a 64-byte value union (8-byte aligned)
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int * 16)]


class _LaunchConfig(ctypes.Structure):
    _fields_ = [("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint), ("gridDimZ", ctypes.c_uint),
                ("blockDimX", ctypes.c_uint), ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
                ("sharedMemBytes", ctypes.c_uint), ("hStream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(_LaunchAttribute)), ("numAttrs", ctypes.c_uint)]


@functools.lru_cache(maxsize=None)
def _driver_launch_ex():
    """cuLaunchKernelEx from libcuda, or None where the driver has none."""
    try:
        fn = ctypes.CDLL("libcuda.so.1").cuLaunchKernelEx
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.POINTER(_LaunchConfig), ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
    return fn


@functools.lru_cache(maxsize=None)
def _can_overlap(device_id: int) -> bool:
    import cupy
    major = cupy.cuda.Device(device_id).compute_capability[:-1]
    return int(major) >= 9 and _driver_launch_ex() is not None


def kernel_params(args) -> list:
    """ctypes values for a kernel's arguments, in order: device arrays (CuPy, anything with
    ``.data.ptr``) and np.uint64 as pointers, np.int32 as int."""
    out = []
    for i, a in enumerate(args):
        if hasattr(a, "data") and hasattr(a.data, "ptr"):
            out.append(ctypes.c_void_p(a.data.ptr))
        elif isinstance(a, np.uint64):
            out.append(ctypes.c_void_p(int(a)))
        elif isinstance(a, np.int32):
            out.append(ctypes.c_int32(int(a)))
        else:
            raise TypeError(f"args[{i}]: must be a device array, np.uint64 (pointer) or np.int32, "
                            f"got {type(a).__name__}")
    return out


def launch(function, grid, block, args, *, stream, device_id: int, after_previous: bool = False):
    """function(grid, block, args) on `stream` (function: a cupy.RawKernel); after_previous=True
    lets it start before the previous kernel on the stream finishes (that kernel must trigger, this
    one wait: see above)."""
    if not (after_previous and OVERLAP and _can_overlap(device_id)):
        function(grid, block, args)
        return
    grid, block = tuple(grid) + (1,) * (3 - len(grid)), tuple(block) + (1,) * (3 - len(block))
    attr = _LaunchAttribute(id=_PROGRAMMATIC_STREAM_SERIALIZATION)
    attr.value[0] = 1
    config = _LaunchConfig(*grid, *block, 0, ctypes.c_void_p(stream.ptr), ctypes.pointer(attr), 1)
    values = kernel_params(args)
    params = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
    handle = function.kernel.ptr  # cupy.RawKernel -> its loaded CUfunction
    err = _driver_launch_ex()(ctypes.byref(config), ctypes.c_void_p(handle), params, None)
    if err != 0:
        raise RuntimeError(f"cuLaunchKernelEx failed with CUresult {err}")

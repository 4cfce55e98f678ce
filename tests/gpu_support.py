"""Skip GPU tests cleanly, with the reason, where there is no CuPy or no CUDA device."""
import pytest


def require_gpu():
    try:
        import cupy
    except ImportError:
        pytest.skip("no GPU: CuPy is not installed (GPU tests run on a CUDA machine)", allow_module_level=True)
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - any driver error means no usable device
        pytest.skip(f"no GPU: CUDA runtime unavailable ({e})", allow_module_level=True)
    if n == 0:
        pytest.skip("no GPU: no CUDA device visible", allow_module_level=True)
    return cupy

"""benchmarks.kernel_ab without a GPU: loading a second gpu package, argument errors, the table."""
import shutil
from pathlib import Path

import pytest

from benchmarks import kernel_ab

REPO = Path(__file__).resolve().parent.parent


def test_base_checkout_loads_as_its_own_package(tmp_path):
    shutil.copytree(REPO / "gpu", tmp_path / "gpu")
    base = kernel_ab.load_base(tmp_path, name="gpu_base_test")
    import gpu
    assert base is not gpu and base.bmma_gemv is not gpu.bmma_gemv
    assert Path(base.kernels.__file__).parent == tmp_path / "gpu"       # its .cu files are the base's
    # its own compiled modules: CuPy would share one between the same code and options
    assert base.kernels.NVRTC_OPTIONS == gpu.kernels.NVRTC_OPTIONS + (kernel_ab.BASE_DEFINE,)


def test_bad_base_and_kernel_are_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="base: .* has no gpu/__init__.py"):
        kernel_ab.load_base(tmp_path)
    with pytest.raises(ValueError, match="kernel: must be one of"):
        kernel_ab.check_kernel("gemm")
    with pytest.raises(SystemExit):
        kernel_ab.main(["--base", str(tmp_path)])
    assert "has no gpu/__init__.py" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        kernel_ab.main(["--base", str(tmp_path), "--bits", "3", "5"])
    assert "bits: each must be 1 to 4" in capsys.readouterr().err
    for g in ("96", "0", "48"):                             # 96 does not divide K = 4096; 48 is no multiple of 32
        with pytest.raises(SystemExit):
            kernel_ab.main(["--base", str(tmp_path), "--group-size", g])
        assert "group_size: must be a positive multiple of 32 dividing every layer's K" in capsys.readouterr().err
    assert kernel_ab.check_group_size(64) == 64 and kernel_ab.check_group_size(256) == 256
    for bad in ("28672x", "0x4096", "big"):
        with pytest.raises(SystemExit):
            kernel_ab.main(["--base", str(tmp_path), "--layers", "70B o", bad])
        assert "layers: each must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):                         # 28672 x 4160: g = 128 does not divide K
        kernel_ab.main(["--base", str(tmp_path), "--layers", "28672x4160"])
    assert "dividing every layer's K" in capsys.readouterr().err


def test_layers_by_name_or_shape():
    from benchmarks.gemv import parse_layer

    assert parse_layer("70B down") == ("70B down", (8192, 28672))
    assert parse_layer("28672x10240") == ("28672x10240", (28672, 10240))


def test_table_flags_unequal_outputs_and_summarises():
    meta = dict(kernel="bmma_gemv", base="/b", gpu="NVIDIA H200", command="python -m benchmarks.kernel_ab --base /b",
                date="2026-11-30", copy_bandwidth_Bps=4.0e12, group_size=64)
    rows = [dict(layer="8B o", M=1, bits=2, base_us=9.0, new_us=10.0, speedup=0.9, floor_us=1.2, bytes_equal=True),
            dict(layer="8B o", M=1, bits=3, base_us=10.0, new_us=8.0, speedup=1.25, floor_us=1.7, bytes_equal=False)]
    text = kernel_ab.markdown(meta, rows)
    assert "| 8B o | 1 | 3 | 10.0 | 8.0 | 1.25× | 21 % | **no** |" in text and "group size 64;" in text
    assert "min 0.90×, median 1.07×, max 1.25×" in text and "equal in 1 of 2 cases" in text

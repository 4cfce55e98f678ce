"""benchmarks.dequantize_layouts without a GPU: its tables, alone and against a base checkout, and argument errors."""
import pytest

from benchmarks import dequantize_layouts

META = dict(gpu="NVIDIA H200", copy_bandwidth_Bps=4.0e12, group_size=128, date="2026-12-01",
            command="python -m benchmarks.dequantize_layouts")
ROW = dict(layer="70B o", N=8192, K=8192, bits=2, rows_us=110.0, tiles_us=100.0, ratio=1.1, floor_us=40.0,
           bytes_equal=True)


def test_layout_table_compares_the_two_layouts():
    md = dequantize_layouts.markdown(META, [ROW, dict(ROW, bits=3, bytes_equal=False)])
    assert "| 70B o | 2 | 110.0 | 100.0 | 1.10× | 40 % | yes |" in md
    assert "**no**" in md and "outputs equal in 1 of 2 cases" in md


def test_table_against_a_base_puts_the_base_first():
    meta = dict(META, base="/tmp/base")
    md = dequantize_layouts.markdown(meta, [dict(ROW, base_us=250.0, base_ratio=2.5)])
    assert md.startswith("# dequantize: this checkout against /tmp/base on NVIDIA H200")
    assert "| 70B o | 2 | 250.0 | 100.0 | 2.50× | 110.0 | 40 % | yes |" in md
    assert "base / new: min 2.50×" in md


def test_base_must_be_a_checkout(tmp_path, capsys):
    with pytest.raises(SystemExit):
        dequantize_layouts.main(["--base", str(tmp_path)])
    assert "has no gpu/__init__.py" in capsys.readouterr().err

"""benchmarks.split_sweep without a GPU: its argument checks and its table."""
import pytest

from benchmarks import split_sweep


def test_shapes_and_cases_are_checked_before_any_work(capsys):
    with pytest.raises(SystemExit):
        split_sweep.main(["--shapes", "70B o", "big"])
    assert "layers: each must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        split_sweep.main(["--cases", "imma_gemm:17"])
    assert "cases: each must be bmma_gemv:M or imma_gemm:M" in capsys.readouterr().err


def test_table_keeps_the_layers_in_run_order_and_bolds_the_best_split():
    records = [dict(layer=layer, kernel="imma_gemm", M=8, bits=2, split=s, us=us)
               for layer, s, us in (("28672x10240", 8192, 20.0), ("28672x10240", 4096, 18.0), ("70B o", 8192, 9.0))]
    md = split_sweep.markdown(dict(gpu="NVIDIA H200", date="2026-12-01", command="c", group_size=128), records)
    body = [line for line in md.splitlines() if line.startswith("| 28672") or line.startswith("| 70B")]
    assert body == ["| 28672x10240 | imma_gemm | 8 | 2 | 20.0 | **18.0** |", "| 70B o | imma_gemm | 8 | 2 | **9.0** | - |"]

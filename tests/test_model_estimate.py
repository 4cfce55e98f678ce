"""The H100 estimate of the GEMV table (benchmarks/model_estimate.py): model times, measured FP16, margins."""
import json

import numpy as np
import pytest

from benchmarks.gemv import LAYERS, bcq_bytes
from benchmarks.model_estimate import (H100_RESULTS, load_h100_run, margins, modelled_records, report, run)
from sim import layer_cost

ERRORS = {"bcq_bmma": 0.05, "bcq_imma": 0.10}


@pytest.fixture(scope="module")
def h100():
    if not H100_RESULTS.is_file():
        pytest.skip(f"{H100_RESULTS} is not in this checkout")
    return load_h100_run()


def test_rows_are_the_models_times_and_the_measured_fp16(h100):
    bw, fp16 = h100
    records = modelled_records(bw, fp16, layers={"70B down": LAYERS["70B down"]}, batches=(1, 8), bits=(2, 3))
    by = {(r["M"], r["method"], r["bits"]): r for r in records}
    assert by[(1, "cublas_fp16", None)]["us"] == fp16[("70B down", 1)] and not by[(1, "cublas_fp16", None)]["model"]
    for M, method, p in ((1, "bcq_bmma", 2), (1, "bcq_imma", 3), (8, "bcq_imma", 2)):
        r = by[(M, method, p)]
        model_us = float(layer_cost("H100-SXM", method, 8192, 28672, M, p).time_s) * 1e6
        assert r["model"] and r["us"] == pytest.approx(model_us)
        assert r["floor_us"] == pytest.approx(bcq_bytes(8192, 28672, M, p) / bw * 1e6)
        assert r["speedup_vs_fp16"] == pytest.approx(fp16[("70B down", M)] / r["us"])
    assert (8, "bcq_bmma", 2) not in by  # the 1-bit kernel does not take batch 8: left out, not NaN


def test_layers_without_a_measured_fp16_row_are_left_out():
    records = modelled_records(3e12, {("8B o", 1): 20.0}, layers={k: LAYERS[k] for k in ("8B o", "8B down")},
                               batches=(1, 2), bits=(2,))
    assert {(r["layer"], r["M"]) for r in records} == {("8B o", 1)}


def _row(layer, M, method, p, us, floor_us=None):
    return dict(layer=layer, N=1, K=1, M=M, method=method, bits=p, us=us, floor_us=floor_us or us,
                fraction_of_floor=(floor_us or us) / us, speedup_vs_fp16=1.0)


def test_margins_call_a_target_close_within_the_models_error():
    recs = [_row("70B down", 1, "cublas_fp16", None, 100.0),
            _row("70B down", 1, "bcq_bmma", 2, 10.0, floor_us=8.5),      # exactly 85 %: margin 1
            _row("70B down", 1, "bcq_bmma", 3, 10.0, floor_us=4.0),      # 40 % of the floor: missed
            _row("70B down", 8, "cublas_fp16", None, 300.0),
            _row("70B down", 8, "bcq_imma", 2, 50.0)]                    # 6x FP16: met
    rows = {r["target"]: r for r in margins(recs, ERRORS)}
    at85, low, fp16 = ("70B down, M=1, 2-bit: 85 % of the floor", "70B down, M=1, 3-bit: 85 % of the floor",
                       "70B down, M=8, 2-bit: 3x FP16 (300.0 us)")
    assert rows[at85]["margin"] == pytest.approx(1.0) and rows[at85]["close"]
    assert rows[low]["margin"] == pytest.approx(4.0 / 0.85 / 10.0) and not rows[low]["close"]
    assert rows[fp16]["margin"] == pytest.approx(2.0) and not rows[fp16]["close"]
    ap = rows["70B down, M=1, 3-bit: 1.5x Any-Precision (66.3 us)"]       # the peer's H100 anchor
    assert ap["margin"] == pytest.approx(66.3 / 1.5 / 10.0)
    text = report(dict(gpu="NVIDIA H100 80GB HBM3", date="d", command="c", method="m", copy_bandwidth_Bps=3e12,
                       group_size=128), recs, ERRORS)
    assert text.startswith("# GEMV on an H100 as the cost model predicts it, not measured")
    assert "## Fastest of the modelled kernels" in text and "LUT, 1-bit" not in text
    assert "| too close to call |" in text and "| missed |" in text and "| met |" in text


def test_run_writes_the_table_and_json_atomically(tmp_path, h100):
    meta, records = run(tmp_path)
    data = json.loads((tmp_path / "gemv_h100_model.json").read_text())
    assert data["meta"]["estimate"].startswith("sim") and len(data["records"]) == len(records)
    assert all(np.isfinite(r["us"]) and r["us"] > 0 for r in records)
    assert set(meta["model_error_leave_one_out"]) == {"bcq_bmma", "bcq_imma"}
    assert "## Margins against the model's error" in (tmp_path / "gemv_h100_model.md").read_text()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_a_file_that_is_not_a_gemv_result_is_refused(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("[]")
    with pytest.raises(ValueError, match="path: .* is not a gemv result"):
        load_h100_run(bad)

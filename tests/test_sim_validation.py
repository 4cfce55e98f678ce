"""The model against measurements: ANCHORS.md H100 table now, our kernel's H100 JSON when it lands."""
import json
import os

import numpy as np
import pytest

from sim.calibrate import FITS, all_measurements, fit_device, bank_conflict_factor, fit_kernel, leave_one_out, with_params
from sim.kernels import default_kernels
from sim.validate import ANCHORS_JSON, GPU_RESULTS_JSON, H200_RESULTS_JSON, load_anchors, load_gpu_results, summarise

H100 = "H100-SXM"
TOLERANCE = {"fp16": 0.15, "anyprec": 0.25, "bcq_lut": 0.15,  # issue 4: median absolute error
             "bcq_dequant": 0.15}                            # ours: held to the same bar as our kernel


def test_anchor_json_is_a_faithful_transcription():
    data = json.loads(ANCHORS_JSON.read_text())
    assert data["source"] and data["measured"] == "2026-11-22" and data["device"] == H100
    anchors = pytest.importorskip("benchmarks.anchors")  # the lead's own transcription of the same table
    for r in data["rows"]:
        assert anchors.CUBLAS_FP16_H100_US[(r["key"], r["M"])] == r["cublas_fp16_us"]
        assert {int(k): v for k, v in r["anyprec_us"].items()} == anchors.ANY_PRECISION_H100_US[(r["key"], r["M"])]
    assert len(data["rows"]) == len(anchors.CUBLAS_FP16_H100_US) == 11


def test_floor_column_matches_the_byte_formula():
    """ANCHORS.md's floor = p planes + p fp16 scales per 128 weights, / 3.03 TB/s (x, y ignored)."""
    data = json.loads(ANCHORS_JSON.read_text())
    for r in data["rows"]:
        for p, us in r["floor_us"].items():
            p = int(p)
            floor = (p * r["N"] * r["K"] / 8 + 2 * p * r["N"] * r["K"] / 128) / data["copy_bandwidth_Bps"] * 1e6
            assert floor == pytest.approx(us, abs=0.06), (r["key"], p)


@pytest.mark.parametrize("method", ["fp16", "anyprec"])
def test_h100_anchor_error_is_within_the_issue_tolerance(method):
    s = summarise(H100, load_anchors())
    assert s[method]["n"] == (11 if method == "fp16" else 22)
    assert s[method]["median_abs_err"] <= TOLERANCE[method], s[method]


@pytest.mark.parametrize("method", ["fp16", "anyprec"])
def test_out_of_sample_error_is_within_the_issue_tolerance(method):
    """Leave-one-out: refit without each row, predict it.  Guards against the fit merely memorising."""
    err = leave_one_out(method, all_measurements(), H100)
    assert np.median(np.abs(err)) <= TOLERANCE[method], np.round(err, 3)


@pytest.mark.parametrize("method", list(FITS))
def test_committed_constants_are_what_the_fit_gives(method):
    ms = all_measurements()
    if sum(m.method == method for m in ms) < 4:
        pytest.skip(f"no {method} measurements committed yet")
    kc = default_kernels()
    for (section, name), value in fit_kernel(method, ms, fit_device(method)).items():
        committed = getattr(getattr(kc, section), name)
        assert committed == pytest.approx(value, rel=0.01, abs=1e-8), f"{section}.{name}: refit {value:.4g}"


def test_bank_conflict_constant_is_what_the_simulation_gives():
    simulated = bank_conflict_factor(trials=4000)
    assert default_kernels().bcq_fixed.bank_conflict_factor == pytest.approx(simulated, rel=0.02)
    assert bank_conflict_factor(entries=64, entry_bytes=2, trials=500) == 1.0  # 32 words, one per bank


# ---------------------------------------------------------------- our kernel (benchmarks/results/gemv_h100.json)

def gpu_results_or_skip(path=GPU_RESULTS_JSON):
    """Our H100 results; skip (with the reason) while the file is absent, fail if BCQ_REQUIRE_GPU_RESULTS=1."""
    if not path.is_file():
        reason = (f"{path} is absent: run `python -m benchmarks.gemv --out benchmarks/results` on an H100 "
                  "and commit it")
        if os.environ.get("BCQ_REQUIRE_GPU_RESULTS") == "1":
            pytest.fail("BCQ_REQUIRE_GPU_RESULTS=1 but " + reason)
        pytest.skip(reason)
    return load_gpu_results(path)


def test_absent_results_skip_unless_required(tmp_path, monkeypatch):
    monkeypatch.delenv("BCQ_REQUIRE_GPU_RESULTS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="is absent"):
        gpu_results_or_skip(tmp_path / "gemv_h100.json")
    monkeypatch.setenv("BCQ_REQUIRE_GPU_RESULTS", "1")
    with pytest.raises(pytest.fail.Exception, match="BCQ_REQUIRE_GPU_RESULTS=1"):
        gpu_results_or_skip(tmp_path / "gemv_h100.json")


def test_our_kernel_and_cublas_match_the_committed_h100_results():
    s = summarise(H100, gpu_results_or_skip())
    for method in ("fp16", "bcq_lut"):
        assert s[method]["n"] > 0, f"no {method} records"
        assert s[method]["median_abs_err"] <= TOLERANCE[method], (method, s[method])


def test_dequantize_path_matches_the_h200_in_and_out_of_sample():
    """Fitted on the H200 rows (the kernel of the H100 rows has been replaced since)."""
    ms = [m for m in gpu_results_or_skip(H200_RESULTS_JSON) if m.method == "bcq_dequant"]
    s = summarise("H200", ms)["bcq_dequant"]
    assert s["n"] == 96 and s["median_abs_err"] <= TOLERANCE["bcq_dequant"], s
    err = leave_one_out("bcq_dequant", ms)
    assert np.median(np.abs(err)) <= TOLERANCE["bcq_dequant"], np.round(err, 3)


def test_our_kernel_model_transfers_across_models():
    """Fit the bcq_lut latencies on the Llama-3.1-8B layers only; predict the 70B layers (and back)."""
    ms = [m for m in gpu_results_or_skip() if m.method == "bcq_lut"]
    for train, test in (("8B", "70B"), ("70B", "8B")):
        kc = with_params(default_kernels(), fit_kernel("bcq_lut", [m for m in ms if m.layer.startswith(train)], H100))
        held_out = [m for m in ms if m.layer.startswith(test)]
        s = summarise(H100, held_out, kc)
        assert s["bcq_lut"]["median_abs_err"] <= TOLERANCE["bcq_lut"], (train, test, s["bcq_lut"])


def test_h100_fit_predicts_the_h200_out_of_sample():
    """Nothing was fitted to the H200 run: only its datasheet entry in hardware.toml changes.

    Our kernel is latency-bound, so the model predicts (and the H200 shows) nearly the H100's times
    despite 1.4x the bandwidth; cuBLAS speeds up with the bandwidth.  The dequantize + cuBLAS path
    does not transfer (docs/sim.md says why), so it is held to no bar here, only reported.
    """
    s = summarise("H200", gpu_results_or_skip(H200_RESULTS_JSON))
    for method in ("fp16", "bcq_lut"):
        assert s[method]["n"] >= 40, (method, s[method])
        assert s[method]["median_abs_err"] <= TOLERANCE[method], (method, s[method])
    h100 = {(m.layer, m.M, m.bits): m.us for m in gpu_results_or_skip() if m.method == "bcq_lut"}
    ratio = [h100[(r["layer"], r["M"], r["bits"])] / r["measured_us"] for r in s["rows"] if r["method"] == "bcq_lut"]
    assert 0.85 <= float(np.median(ratio)) <= 1.15  # the measurement itself: no gain from the faster memory


GOOD = [{"layer": "8B o", "N": 4096, "K": 4096, "M": 1, "method": "cublas_fp16", "bits": None, "us": 23.0},
        {"layer": "8B o", "N": 4096, "K": 4096, "M": 1, "method": "bcq_lut", "bits": 2, "us": 8.0, "extra": 1},
        {"layer": "8B o", "N": 4096, "K": 4096, "M": 8, "method": "bcq_mma", "bits": 2, "us": 9.0}]  # skipped


@pytest.mark.parametrize("wrap", [lambda r: r, lambda r: {"meta": {"gpu": "H100"}, "records": r}])
def test_results_loader_takes_a_list_or_the_benchmark_object(tmp_path, wrap):
    path = tmp_path / "gemv_h100.json"
    path.write_text(json.dumps(wrap(GOOD)))
    ms = load_gpu_results(path)
    assert [(m.method, m.bits, m.us, m.timing) for m in ms] == [("fp16", None, 23.0, "cuda_graph"),
                                                               ("bcq_lut", 2, 8.0, "cuda_graph")]
    assert set(summarise(H100, ms)) == {"fp16", "bcq_lut", "rows"}


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("us"), "missing key"),
    (lambda r: r.update(method="marlin"), "method must be one of"),
    (lambda r: r.update(bits=3), "bits must be null"),
    (lambda r: r.update(N=0), "N must be a positive integer"),
    (lambda r: r.update(us=-1.0), "us must be a positive number"),
])
def test_results_loader_names_the_broken_rule(tmp_path, edit, message):
    records = json.loads(json.dumps(GOOD))
    edit(records[0])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=message):
        load_gpu_results(path)


def test_results_loader_says_where_the_file_comes_from(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmarks.gemv"):
        load_gpu_results(tmp_path / "absent.json")


# ---------------------------------------------------------------- our tensor-core kernels (H200 only)

EXACT_TOLERANCE = {"bcq_bmma": 0.10, "bcq_imma": 0.15}   # median abs error, in-sample and leave-one-out


def h200_exact_or_skip():
    return [m for m in gpu_results_or_skip(H200_RESULTS_JSON) if m.method in EXACT_TOLERANCE]


def test_exact_kernels_are_fitted_on_the_h200_and_nothing_else_moves():
    assert fit_device("bcq_bmma") == fit_device("bcq_imma") == fit_device("bcq_dequant") == "H200"
    assert fit_device("bcq_lut") == H100
    ms = all_measurements()
    assert not any(m.method in ("fp16", "bcq_lut") and m.source == H200_RESULTS_JSON.stem for m in ms)
    assert not any(m.method == "bcq_dequant" and m.source == GPU_RESULTS_JSON.stem for m in ms)  # one device per fit


@pytest.mark.parametrize("method,n", [("bcq_bmma", 72), ("bcq_imma", 120)])
def test_exact_kernels_match_the_h200_in_and_out_of_sample(method, n):
    ms = h200_exact_or_skip()
    s = summarise("H200", ms)[method]
    assert s["n"] == n
    assert s["median_abs_err"] <= EXACT_TOLERANCE[method], s
    err = leave_one_out(method, ms)
    assert np.median(np.abs(err)) <= EXACT_TOLERANCE[method], np.round(err, 3)


def test_exact_kernels_batch_behaviour_is_the_measured_one():
    """imma: batch 1-8 one launch (same cost); 9-16 one launch of two tiles at every precision and group
    size (measured on 70B down at g = 128: 1.35x batch 8 at 2 bits, 1.29x at 4), never the 2x of two
    launches; bmma: cost grows with the batch bucket."""
    from sim import gemv
    t = lambda m, M, p=2, g=128: float(gemv("H200", m, 8192, 28672, M, p, g=g).time_s)  # noqa: E731
    assert t("bcq_imma", 8) == pytest.approx(t("bcq_imma", 1), rel=0.02)   # only x and y bytes grow
    for p in (2, 3, 4):
        for g in (64, 128, 256):
            assert t("bcq_imma", 8, p, g) < t("bcq_imma", 16, p, g) < 1.6 * t("bcq_imma", 8, p, g)
    assert t("bcq_bmma", 1) < t("bcq_bmma", 2) < t("bcq_bmma", 4)
    assert np.isnan(t("bcq_bmma", 8)) and np.isnan(t("bcq_imma", 1, 5))   # bucket x 256/g > 8; p > 4

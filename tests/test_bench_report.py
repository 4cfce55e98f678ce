"""The GEMV benchmark's report (no GPU needed): file naming by GPU, targets, peers compared only on an H100,
one decoder block's linears summed."""
import pytest

from benchmarks.gemv import (LAYERS, bcq_bytes, decoder_layer_sums, fp16_bytes, gpu_slug, issue_targets, markdown,
                             need_us, target_report)


@pytest.mark.parametrize("name, slug", [("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"),
                                        ("NVIDIA A100-SXM4-80GB", "a100"), ("NVIDIA GeForce RTX 4090", "rtx4090"),
                                        ("NVIDIA L40S", "l40s")])
def test_gpu_slug(name, slug):
    assert gpu_slug(name) == slug


def _records(us_lut):
    out = []
    for layer, (N, K) in LAYERS.items():
        for M in (1, 4, 8):
            out.append(dict(layer=layer, N=N, K=K, M=M, method="cublas_fp16", bits=None, us=100.0,
                            bytes=fp16_bytes(N, K, M)))
            for p in (2, 3, 4):
                out.append(dict(layer=layer, N=N, K=K, M=M, method="bcq_lut", bits=p, us=us_lut,
                                bytes=bcq_bytes(N, K, M, p), speedup_vs_fp16=100.0 / us_lut))
    for r in out:
        r["floor_us"] = r["bytes"] / 3e12 * 1e6
        r["fraction_of_floor"] = r["floor_us"] / r["us"]
    return out


def test_targets_say_met_or_missed_by_how_much():
    slow = target_report(_records(1000.0))
    assert any("missed (target 85 %" in line for line in slow)
    assert any("missed, target 1.5x" in line for line in slow)
    fast = target_report(_records(1.0))
    assert all("missed" not in line for line in fast), fast


def test_peer_numbers_compared_only_on_an_h100():
    recs = _records(10.0)
    h100 = markdown(dict(gpu="NVIDIA H100 80GB HBM3", date="d", command="c", method="m", copy_bandwidth_Bps=3e12,
                         group_size=128), recs)
    h200 = markdown(dict(gpu="NVIDIA H200", date="d", command="c", method="m", copy_bandwidth_Bps=4.3e12,
                         group_size=128), recs)
    assert "vs Any-Precision" in h100 and "(estimate)" not in h100
    assert "not compared on this GPU" in h200
    assert all("(estimate)" in line for line in h200.splitlines() if "vs Any-Precision" in line)  # none unlabelled


def test_peer_estimate_on_another_gpu_scales_the_h100_times_by_copy_bandwidth():
    """70B gate+up, M=1, 3-bit: Any-Precision 110.4 us on the H100 (3.03 TB/s) is 79.1 us at 4.23 TB/s."""
    recs = _records(10.0)
    lines = target_report(recs, h100=False, copy_bandwidth_Bps=4.23e12)
    line = next(x for x in lines if "(estimate) 70B gate+up, M=1, 3-bit" in x)
    assert "110.4 us x 0.72 = 79.1 us: 10.0 us = 7.91x (would be met)" in line
    assert sum("(estimate)" in x for x in lines) == 22
    assert not any("(estimate)" in x for x in target_report(recs, h100=False))
    slow = target_report(_records(1000.0), h100=False, copy_bandwidth_Bps=4.23e12)
    assert all("would be missed, target 1.5x" in x for x in slow if "(estimate)" in x)


def test_targets_use_the_fastest_bit_exact_kernel():
    recs = _records(1000.0)
    for r in list(recs):
        if r["method"] == "bcq_lut":
            recs.append(dict(r, method="bcq_bmma", us=r["floor_us"] * 1.01))
    for r in recs:
        r["fraction_of_floor"] = r["floor_us"] / r["us"]
    lines = target_report(recs)
    assert all("missed" not in line for line in lines if "M=1" in line and "floor" in line), lines


def test_bmma_parts_table_marks_the_rules_cost_and_unequal_bytes():
    from benchmarks.bmma_parts import markdown
    meta = dict(gpu="G", command="python -m benchmarks.bmma_parts", date="d", group_size=128, num_sms=132)
    rows = [dict(layer="70B o", N=8192, K=8192, M=1, bits=2, us={"1x1": 15.0, "2x1": 12.5, "1x2": 16.0, "2x2": 14.0},
                 picked="2x1", best="2x1", floor_us=4.5, bytes_equal=True),
            dict(layer="70B down", N=8192, K=28672, M=1, bits=4, us={"1x1": 46.0, "2x1": 61.0}, picked="2x1",
                 best="1x1", floor_us=31.7, bytes_equal=False)]
    md = markdown(meta, rows)
    assert "| 1x1 µs | 2x1 µs | 1x2 µs | 2x2 µs |" in md                          # one tile first, then two
    assert "| 70B o | 1 | 2 | 15.0 | 12.5 | 16.0 | 14.0 | 2x1 | 2x1 | 1.00 | yes |" in md
    assert "| 70B down | 1 | 4 | 46.0 | 61.0 | - | - | 2x1 | 1x1 | 1.33 | **no** |" in md   # the pick costs 1.33x
    assert "1x1 / picked: min 0.75×, median 0.98×, max 1.20×; outputs equal in 1 of 2 cases." in md


def test_bmma_warp_shapes_are_the_compiled_variants():
    from benchmarks.bmma_parts import warp_shapes
    from gpu import kernels
    assert warp_shapes(kernels, 2, 1, 2) == {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1), "2x2": (2, 2)}
    assert warp_shapes(kernels, 2, 1, 3) == {"1x1": (1, 1), "2x1": (2, 1)}   # two tiles hold at most 2 planes
    assert warp_shapes(kernels, 2, 2, 1) == {"1x1": (1, 1)}                   # g = 128, batch 2: one shape
    for S, Mp in kernels.BMMA_INSTANCES:
        for p in range(1, kernels.BMMA_MAX_PLANES + 1):
            assert {(S, Mp, q, r) for q, r in warp_shapes(kernels, S, Mp, p).values()} <= set(kernels.bmma_variants())


def test_decoder_layer_sums_add_each_models_four_layers_at_their_fastest_kernel():
    recs = _records(10.0)
    recs += [dict(r, method="bcq_bmma", us=4.0) for r in recs if r["method"] == "bcq_lut" and r["layer"] == "8B o"]
    sums = {(model, M): (fp16, bcq) for model, M, fp16, bcq in decoder_layer_sums(recs)}
    assert set(sums) == {(model, M) for model in ("8B", "70B") for M in (1, 4, 8)}
    assert sums[("70B", 1)] == (400.0, [40.0, 40.0, 40.0])
    assert sums[("8B", 8)] == (400.0, [34.0, 34.0, 34.0])  # 8B o at the faster kernel's 4 us
    partial = [r for r in recs if not (r["layer"] == "70B down" and r["M"] == 4 and r["bits"] == 3)]
    assert ("70B", 4) not in {(model, M) for model, M, _, _ in decoder_layer_sums(partial)}
    md = markdown(dict(gpu="NVIDIA H200", date="d", command="c", method="m", copy_bandwidth_Bps=4.3e12,
                       group_size=128), recs)
    assert "| 70B | 1 | 400.0 | 40.0 | 40.0 | 40.0 | 10.00 / 10.00 / 10.00 |" in md


def test_render_rebuilds_the_report_and_plot_from_a_json_and_refuses_other_files(tmp_path):
    import json

    from benchmarks.gemv import render
    meta = dict(gpu="NVIDIA H200", date="d", command="c", method="m", copy_bandwidth_Bps=4.3e12, group_size=128)
    recs = _records(10.0)
    path = tmp_path / "gemv_h200.json"
    path.write_text(json.dumps({"meta": meta, "records": recs}))
    md_path, png_path = render(path)
    assert md_path.read_text() == markdown(meta, recs)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemv_h200.json", "gemv_h200.md", "gemv_h200.png"]
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match=r"json_path: .* is not a gemv result \(needs 'meta' and 'records'\)"):
        render(bad)


def test_issue_targets_and_the_time_each_needs():
    ts = issue_targets(_records(10.0))
    assert [t["kind"] for t in ts] == ["floor"] * 12 + ["peer"] * 22 + ["fp16"] * 4   # 70B x 3 bits, anchors, 70B
    floor, peer, fp16 = ts[0], ts[12], ts[-1]
    assert need_us(floor) == pytest.approx(floor["r"]["floor_us"] / 0.85)
    assert need_us(peer) == pytest.approx(peer["ref_us"] / 1.5)
    assert need_us(peer, 0.5) == pytest.approx(peer["ref_us"] / 3)  # a scaled peer time
    assert fp16["M"] == 8 and fp16["bits"] == 2 and need_us(fp16) == pytest.approx(100.0 / 3)

"""benchmarks/contract_precision.py: its torch rounding is the contract's step 1 (reference/exact_mma.py),
at the contract's F = 15 and at the other F it studies; the study's report and its argument checks."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

torch = pytest.importorskip("torch")

from benchmarks.contract_precision import contract_activations, main, markdown  # noqa: E402
from reference.exact_mma import FIX_BITS, encode_activations  # noqa: E402
from bcq_core.random_problems import random_activations  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(M=st.integers(1, 4), G=st.integers(1, 6), g=st.sampled_from([32, 64, 128]),
       F=st.sampled_from([21, 18, FIX_BITS, 14, 10, 4]), kind=st.sampled_from(["normal", "tiny", "huge", "mixed", "zeros"]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_rounding_is_the_contracts_step_1(M, G, g, F, kind, seed):
    rng = np.random.default_rng(seed)
    x = np.zeros((M, G * g), np.float16) if kind == "zeros" else random_activations(rng, M, G * g, kind)
    fix, _, _, E, _ = encode_activations(x, g, fix_bits=F)
    want = np.ldexp(fix.astype(np.float64), np.repeat(E - F, g, axis=1))  # fix 2^(E - F), exact in float64
    got = contract_activations(torch.from_numpy(x.astype(np.float32)).double(), g, F).numpy()
    assert np.array_equal(got, want)


def test_full_precision_bits_change_nothing_an_fp16_value_holds():
    # F bits below the group maximum (here 1.0, E = 1) hold every fp16 value of 2^(E - F + 10) or more
    x = torch.tensor([[1.0, -0.5, 0.25 + 2 ** -12, 3.0 / 1024]], dtype=torch.float32).repeat(1, 8)
    assert torch.equal(contract_activations(x, 32, 21), x.half().float())
    assert torch.equal(contract_activations(x, 32, FIX_BITS), x.half().float())  # 2^-4 and up, and 2^-14 steps
    assert not torch.equal(contract_activations(x, 32, 8), x.half().float())  # 8 bits lose 2^-12


def test_group_size_must_divide_the_last_axis():
    with pytest.raises(ValueError, match=r"group_size: must divide the last axis \(96\), got 64"):
        contract_activations(torch.zeros(2, 96), 64, 21)


def test_fix_bits_are_checked():
    with pytest.raises(SystemExit):
        main(["--fix-bits", "21", "1", "--out", "/nonexistent"])


def test_report_lists_every_f_and_precision():
    rows = [{"fix_bits": F, "weights": w, "ppl": 10.0 + i, "kl": 0.001 * i}
            for i, (F, w) in enumerate((F, w) for F in (None, 21, 14) for w in ("fp16", 2, 3, 4))]
    meta = {"group_size": 64, "command": "python -m benchmarks.contract_precision", "date": "2026-11-30",
            "seconds": 1.0, "threads": 2, "windows": 8, "window_len": 512, "fp_ppl": 9.5,
            "quantizer": "AnyBCQ progressive, no calibration"}
    md = markdown(meta, rows)
    assert "| none (float32) | 10.000 / 0.00e+00 |" in md and "| 14 |" in md.splitlines()[-1]
    assert md.count("\n| ") == 4  # header + 3 rows of F


def test_group_stats_count_outliers_and_the_inputs_f15_rounds():
    from benchmarks.contract_precision import GroupStats

    stats = GroupStats(4)
    # group 1: max 1.0 (E = 1), median |x| 0.03125 (the lower middle value) -> ratio 32; two inputs below 2^-4
    # group 2: all equal (ratio 1, none below); group 3: all zero (skipped by the ratios, none below)
    x = torch.tensor([[1.0, 0.0625, 0.03125, 0.01], [0.5, 0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]])
    stats(None, (x,))
    s = stats.summary()
    assert s["inputs"] == 12 and s["share_below_2^(E-5)"] == pytest.approx(2 / 12)
    assert s["amax_over_median_max"] == pytest.approx(1.0 / 0.03125) and s["amax_over_median_p50"] >= 1.0
    rows = [{"fix_bits": F, "weights": w, "ppl": 1.0, "kl": 0.0} for F in (None, 15) for w in ("fp16", 2, 3, 4)]
    meta = {"group_size": 4, "command": "c", "date": "d", "seconds": 1.0, "threads": 2, "windows": 1,
            "window_len": 8, "fp_ppl": 1.0, "quantizer": "q", "group_stats": s}
    assert "16.7 % of the inputs lie below 2^(E - 5)" in markdown(meta, rows)

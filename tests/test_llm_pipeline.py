"""The demo pipeline end to end on a tiny Llama, the report, and the CLI's clear errors."""
import json

import numpy as np
import pytest
import torch

from bcq_core.cli import main
from llm.calibrate import CalibConfig
from llm.checkpoint import load_checkpoint
from llm.convert import model_precisions
from llm.data import Corpus
from llm.e2e import E2EConfig
from llm.models import ByteTokenizer, tiny_llama
from llm.pipeline import METHODS, DemoConfig, run_demo
from llm.report import targets

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rng = np.random.default_rng(0)
    corpus = Corpus(rng.integers(0, 256, 4000), rng.integers(0, 256, 2000), ("a",), ("b",))
    config = DemoConfig(methods=tuple(METHODS), group_size=32, windows=3, window_len=48, iters=3, fisher_seqs=2, fisher_len=32,
                        max_new_tokens=4, calib=CalibConfig(iters=4, n_seqs=4, seq_len=32),
                        e2e=E2EConfig(steps=3, n_seqs=4, seq_len=32, held=2))
    results = run_demo(config, out, fp_model=tiny_llama(), tokenizer=ByteTokenizer(), corpus=corpus,
                       progress=False, log=lambda *a: None)
    return results, out


def test_every_method_scored_at_every_precision(demo):
    results, out = demo
    assert set(results["methods"]) == set(METHODS)
    for key, row in results["methods"].items():
        expected = [3, 4] if key == "anyprec3" else [2, 3, 4]
        assert sorted(row["ppl"]) == expected, key
        assert all(np.isfinite(v) and v > 1 for v in row["ppl"].values())
        assert all(v >= -1e-6 for v in row["kl"].values())
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["fp_ppl"] == pytest.approx(results["fp_ppl"])


def test_report_and_plots_are_written(demo):
    results, out = demo
    text = (out / "report.md").read_text()
    assert "| method |" in text and "## Targets" in text and "## Memory" in text
    for name in ("llm_ppl.png", "llm_kl.png", "llm_memory.png", "llm_calibration.png"):
        assert (out / name).stat().st_size > 5000
    assert len(targets(results)) > 10
    mem = results["memory"]
    assert mem["multi"] < mem["separate"]


def test_saved_model_loads_and_serves_every_precision(demo):
    results, out = demo
    model, config = load_checkpoint(out / "model.safetensors", tiny_llama(seed=9))
    assert model_precisions(model) == (2, 3, 4) and config["quant"]["method"] == "progressive"


def test_e2e_model_is_saved_and_its_stage_recorded(demo):
    results, out = demo
    for method in ("progressive", "joint"):
        stats = results[f"e2e_{method}"]
        assert [s["p"] for s in stats] == [2, 3, 4] and all(len(s["losses"]) == 3 for s in stats)
        assert all(s["kl_after"] <= s["kl_before"] for s in stats)
        model, config = load_checkpoint(out / f"model_{method}_cal_e2e.safetensors", tiny_llama(seed=9))
        assert model_precisions(model) == (2, 3, 4) and config["quant"]["e2e"]["steps"] == 3
    text = (out / "report.md").read_text()
    assert "end-to-end scale training (joint)" in text and "end-to-end training on 128 tokens" in text


def test_cli_errors_are_clear(tmp_path, capsys, demo):
    assert main(["eval", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "x.safetensors").write_bytes(b"junk")
    assert main(["eval", str(tmp_path / "x.safetensors")]) == 2
    assert "not a readable safetensors" in capsys.readouterr().err
    _, out = demo
    assert main(["eval", str(out / "model.safetensors")]) == 2  # a tiny model: not SmolLM2's text
    assert "knows the text and reference" in capsys.readouterr().err
    assert main(["demo", "--methods", "rtn,bogus", "-o", str(tmp_path / "d")]) == 2
    assert "unknown ['bogus']" in capsys.readouterr().err


def test_bad_e2e_flag_is_refused_before_anything_loads(tmp_path, capsys):
    assert main(["demo", "--methods", "joint+cal+e2e", "--e2e-steps", "0", "-o", str(tmp_path / "d")]) == 2
    assert "steps: must be a positive int, got 0" in capsys.readouterr().err
    assert main(["demo", "--methods", "joint+cal+e2e", "--e2e-lr", "-1", "-o", str(tmp_path / "d")]) == 2
    assert "lr: must be a positive" in capsys.readouterr().err
    (tmp_path / "c.npz").write_bytes(b"PK junk")
    assert main(["demo", "--corpus", str(tmp_path / "c.npz"), "-o", str(tmp_path / "d")]) == 2
    assert "corpus: " in capsys.readouterr().err
    with pytest.raises(SystemExit):                                # argparse: not one of auto / cpu / cuda
        main(["demo", "--device", "tpu", "-o", str(tmp_path / "d")])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_asking_for_e2e_alone_calibrates_the_same_model(tmp_path):
    """The "+cal+e2e" methods start from the very "+cal" model (activation importance included)."""
    rng = np.random.default_rng(0)
    corpus = Corpus(rng.integers(0, 256, 4000), rng.integers(0, 256, 2000), ("a",), ("b",))
    rows = {}
    for methods in (("progressive+cal",), ("progressive+cal+e2e",)):
        config = DemoConfig(methods=methods, group_size=32, windows=2, window_len=48, iters=3, max_new_tokens=2,
                            calib=CalibConfig(iters=2, n_seqs=4, seq_len=32),
                            e2e=E2EConfig(steps=2, n_seqs=4, seq_len=32, held=2))
        results = run_demo(config, tmp_path / methods[0], fp_model=tiny_llama(), tokenizer=ByteTokenizer(),
                           corpus=corpus, progress=False, log=lambda *a: None)
        rows[methods[0]] = results["methods"]["progressive+cal"]["ppl"]
    assert rows["progressive+cal"] == rows["progressive+cal+e2e"]


def test_bad_demo_config():
    with pytest.raises(ValueError, match="bits"):
        DemoConfig(bits=(2, 4))


def test_default_demo_runs_every_method_but_the_optional_joint_variants():
    from llm.pipeline import OPTIONAL

    assert set(DemoConfig().methods) == set(METHODS) - set(OPTIONAL)
    assert set(OPTIONAL) <= set(METHODS)


def test_device_is_checked_and_auto_falls_back_to_the_cpu(monkeypatch):
    from llm.models import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device: 'cuda' asked for, but torch sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device: must be 'auto', 'cpu' or 'cuda', got 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="device: must be"):
        DemoConfig(device="gpu0")


@pytest.mark.parametrize("flag,graphed", [((), True), (("--no-cuda-graph",), False)])
def test_no_cuda_graph_flag_reaches_both_training_stages(tmp_path, monkeypatch, flag, graphed):
    import llm.pipeline

    seen = {}

    def fake_run_demo(config, *args, **kwargs):
        seen["config"] = config
        return {"timing_s": {"total": 0.0}}

    monkeypatch.setattr(llm.pipeline, "run_demo", fake_run_demo)
    assert main(["demo", "--methods", "joint+cal+e2e", *flag, "-o", str(tmp_path / "d")]) == 0
    assert seen["config"].calib.cuda_graph is graphed and seen["config"].e2e.cuda_graph is graphed

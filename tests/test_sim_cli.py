"""`bcq sim`: markdown, JSON, roofline PNG, validation."""
import json

import pytest

from bcq_core.cli import main


def test_model_table_in_markdown(capsys):
    assert main(["sim", "--device", "H100-SXM", "--model", "llama-3.1-8b", "--bits", "2,3,4", "--batch", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | device | method | bits | batch | tokens/s")
    assert len(lines) == 2 + 1 + 3 + 3  # header, rule, fp16, bcq_lut x3, anyprec x3
    assert any("| bcq_lut | 2 |" in line for line in lines)


def test_shape_table_as_json(capsys):
    assert main(["sim", "--device", "h100", "--shape", "28672x4096", "--bits", "2,4", "--batch", "1,8",
                 "--methods", "fp16,bcq_lut", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 * (1 + 2)
    assert {r["bound by"] for r in rows} <= {"memory", "issue", "smem", "tensor", "launch", "latency"}


def test_accelerator_rows_carry_tops_per_watt(capsys):
    assert main(["sim", "--device", "FIGLUT", "--model", "opt-6.7b", "--bits", "2.4,4", "--batch", "32", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["bits"] for r in rows] == [2.4, 4] and rows[0]["TOPS/W"] > rows[1]["TOPS/W"]


def test_roofline_and_whatif_pngs_are_written(tmp_path, capsys):
    roof, whatif = tmp_path / "roof.png", tmp_path / "whatif.png"
    assert main(["sim", "--device", "H100-SXM", "--roofline", str(roof), "--whatif", str(whatif)]) == 0
    for png in (roof, whatif):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validate_prints_every_target(capsys):
    assert main(["sim", "--validate"]) == 0
    out = capsys.readouterr().out
    for needle in ("median abs error", "anyprec", "FIGLUT", "2.4 vs FIGNA 3"):
        assert needle in out


@pytest.mark.parametrize("argv, message", [(["--shape", "4096by4096"], "--shape"), (["--bits", "two"], "--bits"),
                                           (["--device", "TPU"], "device")])
def test_bad_arguments_exit_2_with_the_rule(capsys, argv, message):
    assert main(["sim", *argv]) == 2
    assert message in capsys.readouterr().err

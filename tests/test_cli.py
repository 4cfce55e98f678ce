"""``bcq quantize / info / error``: happy paths in-process, every bad input -> one line on stderr, exit 2."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from bcq_core import fileio
from bcq_core.bcq import BCQ
from bcq_core.cli import main
from bcq_core.layout import pack

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    """(exit status, stdout, stderr) of ``bcq argv`` run in-process."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def fails(capsys, *argv, match: str):
    """The command must exit 2 with one stderr line holding ``match`` and nothing on stdout."""
    rc, out, err = run(capsys, *argv)
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("warning:")]
    assert rc == 2 and out == "", (rc, out, err)
    assert len(lines) == 1 and match in lines[0], err
    return lines[0]


def hand_built(tmp_path, N=8, K=256, g=128):
    """A model file from random planes and fp16-exact scales, and the W it represents exactly at 4 bits."""
    rng = np.random.default_rng(0)
    signs = rng.choice(np.array([-1, 1], np.int8), size=(4, N, K))
    a4 = (np.abs(rng.standard_normal((4, N, K // g))) + 1) * 0.5 ** np.arange(4)[:, None, None]
    alpha = {p: a4[:p].astype(np.float16).astype(np.float32) for p in (2, 3, 4)}
    b = BCQ(signs=signs, alpha=alpha, group_size=g)
    np.save(tmp_path / "w.npy", b.dequantize(4))
    fileio.save(tmp_path / "q.safetensors", {"w": pack(b)}, method="progressive")
    return tmp_path / "q.safetensors", tmp_path / "w.npy"


def bf16_file(path, tensors: dict):
    """A safetensors file of float32 arrays stored as BF16 (top halves), written byte by byte."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        bits = (np.ascontiguousarray(a, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [offset, offset + len(bits)]}
        blobs.append(bits)
        offset += len(bits)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_help_subprocess():
    r = subprocess.run([sys.executable, "-m", "bcq_core.cli", "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "quantize" in r.stdout and "info" in r.stdout and "error" in r.stdout


# ------------------------------------------------------------------------- info and error on a hand-built file

def test_info_tables_and_json(tmp_path, capsys):
    q, _ = hand_built(tmp_path)
    rc, out, _ = run(capsys, "info", q)
    assert rc == 0 and "format bcq-packed v1" in out and "8 x 256" in out and "2,3,4" in out and "49.4 %" in out
    rc, out, _ = run(capsys, "info", q, "--json")
    doc = json.loads(out)
    m = doc["matrices"]["w"]
    assert m["shape"] == [8, 256] and m["precisions"] == [2, 3, 4] and m["num_planes"] == 4
    assert doc["memory"]["planes_bytes"] == 4 * 8 * 256 // 8
    assert doc["memory"]["alpha_bytes"] == {"2": 2 * 8 * 2 * 2, "3": 3 * 8 * 2 * 2, "4": 4 * 8 * 2 * 2}
    assert doc["memory"]["saving_bytes"] == doc["memory"]["separate_bytes"] - doc["memory"]["total_bytes"]


def test_error_is_zero_at_4_bits_and_falls_with_p(tmp_path, capsys):
    q, w = hand_built(tmp_path)
    rc, out, _ = run(capsys, "error", q, "--against", w, "--json")
    errs = {r["bits"]: r["relative_error"] for r in json.loads(out)["errors"]}
    assert rc == 0 and errs[4] < 1e-6 and errs[2] > errs[3] > errs[4]
    rc, out, _ = run(capsys, "error", q, "--against", w)
    assert rc == 0 and out.splitlines()[0].split() == ["matrix", "shape", "bits", "rel.", "error"]


# ------------------------------------------------------------------------- quantize (needs the quantizers)

@pytest.fixture(scope="module")
def quantizers():
    return pytest.importorskip("bcq_core.quantize")


def test_quantize_npy_then_info_and_error(tmp_path, capsys, quantizers):
    W = np.random.default_rng(1).standard_normal((16, 256)).astype(np.float32)
    np.save(tmp_path / "layer.npy", W)
    out_path = tmp_path / "q.safetensors"
    rc, out, err = run(capsys, "quantize", tmp_path / "layer.npy", "-o", out_path, "--bits", "2,3,4",
                       "--group-size", "128", "--iters", "2", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["matrices"][0]["name"] == "layer" and doc["memory"]["total_bytes"] > 0
    assert "quantize" in err  # the progress bar, on stderr
    assert fileio.read_meta(out_path)["matrices"]["layer"]["precisions"] == (2, 3, 4)
    rc, out, _ = run(capsys, "error", out_path, "--against", tmp_path / "layer.npy", "--json")
    errs = [r["relative_error"] for r in json.loads(out)["errors"]]
    assert rc == 0 and len(errs) == 3 and errs[0] >= errs[1] >= errs[2] and errs[0] < 0.5


def test_quantize_bf16_safetensors_fixed(tmp_path, capsys, quantizers):
    rng = np.random.default_rng(2)
    src = tmp_path / "model.safetensors"
    bf16_file(src, {"a.weight": rng.standard_normal((8, 128)), "a.norm": rng.standard_normal(128),
                    "b.weight": rng.standard_normal((4, 256))})
    out_path = tmp_path / "q.safetensors"
    rc, out, err = run(capsys, "quantize", src, "-o", out_path, "--bits", "2,3", "--method", "fixed",
                       "--iters", "2")
    assert rc == 0 and "skipping 'a.norm'" in err and "wrote" in out
    meta = fileio.read_meta(out_path)
    assert meta["method"] == "fixed"
    assert set(meta["matrices"]) == {"a.weight@2bit", "a.weight@3bit", "b.weight@2bit", "b.weight@3bit"}
    m = meta["matrices"]["a.weight@3bit"]
    assert m["source"] == "a.weight" and m["bits"] == 3 and m["num_planes"] == 3 and m["source_dtype"] == "bfloat16"
    rc, out, _ = run(capsys, "error", out_path, "--against", src, "--json")
    rows = json.loads(out)["errors"]
    assert rc == 0 and {(r["source"], r["bits"]) for r in rows} == {(s, p) for s in ("a.weight", "b.weight")
                                                                    for p in (2, 3)}
    rc, out, _ = run(capsys, "info", out_path, "--json")
    assert rc == 0 and json.loads(out)["memory"]["saving_bytes"] == 0


def test_quantize_passes_method_and_asymmetric_through(tmp_path, capsys, monkeypatch, quantizers):
    """Wiring only (the joint quantizer's numba build is its own tests' cost): a spy stands in for quantize."""
    seen = {}

    def spy(W, config, importance=None):
        seen["config"], seen["W"] = config, W
        N, K = W.shape
        signs = np.where(np.arange(3 * N * K).reshape(3, N, K) % 3, 1, -1).astype(np.int8)
        return BCQ(signs=signs, alpha={p: np.ones((p, N, K // 128), np.float32) for p in (2, 3)}, group_size=128,
                   beta={p: np.zeros((N, K // 128), np.float32) for p in (2, 3)})

    monkeypatch.setattr(quantizers, "quantize", spy)
    W = np.random.default_rng(3).standard_normal((4, 128)).astype(np.float16)
    np.save(tmp_path / "w.npy", W)
    rc, _, _ = run(capsys, "quantize", tmp_path / "w.npy", "-o", tmp_path / "q.safetensors", "--method", "joint",
                   "--asymmetric", "--iters", "7", "--bits", "3,2", "--group-size", "128")
    c = seen["config"]
    assert rc == 0 and (c.method, c.asymmetric, c.iters, c.bits, c.group_size) == ("joint", True, 7, (2, 3), 128)
    assert seen["W"].dtype == np.float32 and np.array_equal(seen["W"], W.astype(np.float32))
    m = fileio.read_meta(tmp_path / "q.safetensors")["matrices"]["w"]
    assert m["offsets"] and m["method"] == "joint" and m["source_dtype"] == "float16"


# ------------------------------------------------------------------------- bad input: one line, exit 2

@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "w.npy", rng.standard_normal((4, 256)).astype(np.float32))
    np.save(tmp_path / "k100.npy", np.ones((4, 100), np.float32))
    nan = rng.standard_normal((4, 256)).astype(np.float32)
    nan[1, 7] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "int.npy", np.ones((4, 256), np.int32))
    np.save(tmp_path / "vec.npy", np.ones(256, np.float32))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    (tmp_path / "w.txt").write_text("1 2 3")
    safetensors.numpy.save_file({"bias": np.ones(4, np.float32), "ids": np.ones((2, 2), np.int64)},
                                tmp_path / "no2d.safetensors")
    safetensors.numpy.save_file({"a": np.ones((4, 256), np.float32), "b": np.full((4, 256), np.inf, np.float32)},
                                tmp_path / "inf.safetensors")
    (tmp_path / "m").mkdir()
    model, _ = hand_built(tmp_path / "m")
    data = model.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[9] ^= 0x55  # inside the JSON header
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    return tmp_path, model


QUANTIZE_BAD = [
    (["nope.npy"], "IN: no such file"),
    (["w.txt"], "IN: must be a .npy or .safetensors file"),
    (["w.npy", "-o", "out.bin"], "-o: must end in .safetensors"),
    (["w.npy", "-o", "missing/out.safetensors"], "-o: folder"),
    (["w.npy", "--bits", "2,4"], "--bits: precisions must be distinct and consecutive, got (2, 4)"),
    (["w.npy", "--bits", "0,1"], "--bits: precisions must lie in 1..8, got (0, 1)"),
    (["w.npy", "--bits", "2,2,3"], "--bits: precisions must be distinct and consecutive"),
    (["w.npy", "--bits", "two"], "--bits: must be comma-separated integers"),
    (["w.npy", "--bits", ""], "--bits: must be comma-separated integers"),
    (["w.npy", "--group-size", "96"], "--group-size (matrix 'w', shape (4, 256)): must divide K=256, got 96"),
    (["w.npy", "--group-size", "48"], "--group-size (matrix 'w', shape (4, 256)): must be a positive multiple of 32"),
    (["w.npy", "--group-size", "abc"], "--group-size: must be an integer"),
    (["k100.npy"], "--group-size (matrix 'k100', shape (4, 100)): must divide K=100, got 128"),
    (["w.npy", "--iters", "-1"], "--iters: must be >= 0, got -1"),
    (["w.npy", "--method", "greedy"], "--method: must be one of progressive, joint, fixed, got 'greedy'"),
    (["nan.npy"], "IN: matrix 'nan': must contain only finite values, found 1 NaN/Inf"),
    (["inf.safetensors"], "IN: matrix 'b': must contain only finite values, found 1024 NaN/Inf"),
    (["obj.npy"], "IN: 'obj.npy' is not a readable .npy file (it holds Python objects"),
    (["junk.npy"], "IN: 'junk.npy' is not a readable .npy file"),
    (["int.npy"], "IN: 'int.npy' must hold floats"),
    (["vec.npy"], "IN: 'vec.npy' must hold one 2-D matrix (N, K), got shape (256,)"),
    (["no2d.safetensors"], "IN: 'no2d.safetensors' has no 2-D float tensor to quantize"),
    (["trunc.safetensors"], "IN: trunc.safetensors: truncated"),
    (["flip.safetensors"], "IN: flip.safetensors: corrupted safetensors header"),
    (["w.npy", "-o", "w.npy"], "-o: must end in .safetensors"),
]


@pytest.mark.parametrize("argv, match", QUANTIZE_BAD, ids=[" ".join(a) or "empty" for a, _ in QUANTIZE_BAD])
def test_quantize_bad_input(inputs, capsys, monkeypatch, argv, match):
    tmp, _ = inputs
    monkeypatch.chdir(tmp)
    if "-o" not in argv:
        argv = [*argv, "-o", "out.safetensors"]
    fails(capsys, "quantize", *argv, match=match)
    assert not (tmp / "out.safetensors").exists()
    assert not [p for p in tmp.iterdir() if p.name.endswith(".tmp")]


def test_quantize_refuses_to_overwrite_its_input(inputs, capsys, monkeypatch):
    tmp, model = inputs
    monkeypatch.chdir(tmp)
    safetensors.numpy.save_file({"w": np.ones((4, 256), np.float32)}, tmp / "in.safetensors")
    fails(capsys, "quantize", "in.safetensors", "-o", "./in.safetensors", match="-o: must differ from IN")


def test_missing_output_argument_is_a_usage_error(inputs, capsys):
    with pytest.raises(SystemExit) as e:
        main(["quantize", str(inputs[0] / "w.npy")])
    assert e.value.code == 2 and "-o" in capsys.readouterr().err


INFO_BAD = [
    (["nope.safetensors"], "FILE: no such file 'nope.safetensors'"),
    (["w.npy"], "FILE: must be a .safetensors model file"),
    (["trunc.safetensors"], "FILE: trunc.safetensors: truncated: tensor"),
    (["flip.safetensors"], "FILE: flip.safetensors: corrupted safetensors header"),
    (["inf.safetensors"], "FILE: inf.safetensors: no 'bcq-packed' metadata: not a BCQ model file"),
]


@pytest.mark.parametrize("argv, match", INFO_BAD, ids=[a[0] for a, _ in INFO_BAD])
@pytest.mark.parametrize("command", ["info", "error"])
def test_info_and_error_bad_file(inputs, capsys, monkeypatch, argv, match, command):
    monkeypatch.chdir(inputs[0])
    extra = ["--against", "w.npy"] if command == "error" else []
    fails(capsys, command, *argv, *extra, match=match)


def test_error_bad_against(inputs, capsys, monkeypatch):
    tmp, model = inputs
    monkeypatch.chdir(tmp)
    fails(capsys, "error", model, "--against", "nope.npy", match="--against: no such file")
    fails(capsys, "error", model, "--against", "w.txt", match="--against: must be a .npy or .safetensors file")
    fails(capsys, "error", model, "--against", "k100.npy", match="--against: 'k100.npy' has no matrix 'w'")
    np.save(tmp / "w.npy", np.ones((4, 128), np.float32))
    fails(capsys, "error", model, "--against", "w.npy", match="--against: matrix 'w' is (4, 128), the file's 'w' is (8, 256)")
    np.save(tmp / "w.npy", np.full((8, 256), np.nan, np.float32))
    fails(capsys, "error", model, "--against", "w.npy", match="--against: matrix 'w': must contain only finite values")


def test_every_listed_subcommand_module_exists():
    """A module listed in SUBCOMMAND_MODULES but missing would silently drop its commands."""
    import importlib

    from bcq_core.cli import SUBCOMMAND_MODULES, build_parser

    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name)
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"quantize", "info", "error", "bench", "sim", "demo", "eval"} <= set(commands)


def test_bench_without_a_gpu_says_so(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)  # as on a machine without CuPy
    assert main(["bench"]) == 2
    assert "needs CuPy and a CUDA GPU" in capsys.readouterr().err


def test_bench_runs_a_cpu_suite(tmp_path, capsys):
    assert main(["bench", "quantize-quality", "--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "quantize_quality_quick.md").is_file()

"""bcq_core.fileio: bit-exact save/load, metadata, atomic writes, and every way a file can be wrong."""
from __future__ import annotations

import json
import re
import os
import struct
import zlib

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_layout import assert_same, random_packed

from bcq_core import fileio
from bcq_core.fileio import load, load_official, load_with_meta, read_meta, save, save_official


def model(offsets=False):
    return {"model.layers.0.q_proj": random_packed(0, offsets=offsets),
            "lm_head": random_packed(1, P=4, N=3, K=128, g=64, precisions=(2, 3, 4), offsets=offsets)}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.safetensors"
    save(path, model(), method="progressive", extra_meta={"note": "x"}, matrix_meta={"lm_head": {"source": "W"}})
    return path


def raw(path):
    """(tensors, metadata) exactly as stored."""
    from safetensors import safe_open
    with safe_open(path, "np") as f:
        meta = f.metadata()
    return safetensors.numpy.load_file(path), meta


def rewrite(path, tensors, meta, fix_crc=True):
    """Write tensors + metadata as they are (crc32 recomputed unless asked not to)."""
    if fix_crc:
        meta = {**meta, "crc32": json.dumps({t: zlib.crc32(np.ascontiguousarray(a)) for t, a in tensors.items()})}
    safetensors.numpy.save_file(tensors, path, metadata=meta)


# ------------------------------------------------------------------------- round trips

@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 31), P=st.integers(1, 4), offsets=st.booleans(), n=st.integers(1, 3))
def test_round_trip_bit_exact(tmp_path_factory, seed, P, offsets, n):
    path = tmp_path_factory.mktemp("rt") / "m.safetensors"
    mats = {f"layer.{i}.w": random_packed(seed + i, P=P, N=2 + i, K=64, g=32, precisions=tuple(range(1, P + 1)),
                                          offsets=offsets) for i in range(n)}
    save(path, mats, method="joint")
    back = load(path)
    assert list(back) == list(mats)
    for name in mats:
        assert_same(back[name], mats[name])


def test_metadata(saved):
    _, metadata = raw(saved)
    assert set(metadata) == set(fileio.FORMAT_KEYS)
    assert metadata["format"] == "bcq-packed" and metadata["format_version"] == "1"
    meta = read_meta(saved)
    assert meta["method"] == "progressive" and meta["extra"] == {"note": "x"}
    m = meta["matrices"]["lm_head"]
    assert m == {"shape": (3, 128), "group_size": 64, "precisions": (2, 3, 4), "num_planes": 4,
                 "source_dtype": "float32", "method": "progressive", "offsets": False, "source": "W"}
    mats, meta2 = load_with_meta(saved)
    assert meta2["matrices"] == meta["matrices"] and mats["lm_head"].source_dtype == "float32"


def test_source_dtype_and_offsets_survive(tmp_path):
    q = random_packed(3, offsets=True)
    q.source_dtype = "bfloat16"
    save(tmp_path / "a.safetensors", {"w": q}, method="fixed")
    back = load(tmp_path / "a.safetensors")["w"]
    assert back.source_dtype == "bfloat16"
    assert_same(back, q)


def test_official_round_trip(tmp_path):
    mats = model(offsets=True)
    save_official(tmp_path / "o.safetensors", mats)
    back = load_official(tmp_path / "o.safetensors")
    assert set(back) == set(mats)
    for name in mats:
        assert_same(back[name], mats[name])
    names = set(raw(tmp_path / "o.safetensors")[0])
    assert "lm_head.qweight" in names and "lm_head.alpha_4" in names and "lm_head.beta_2" in names


def test_load_official_bare_names_and_extra_tensors(tmp_path):
    from bcq_core.layout import to_official
    q = random_packed(5)
    tensors = {**to_official(q), "embed.weight": np.ones((2, 2), np.float32)}
    safetensors.numpy.save_file(tensors, tmp_path / "o.safetensors")
    assert_same(load_official(tmp_path / "o.safetensors")[""], q)
    safetensors.numpy.save_file({"x": np.ones(2, np.float32)}, tmp_path / "none.safetensors")
    with pytest.raises(ValueError, match="no '.qweight' tensors"):
        load_official(tmp_path / "none.safetensors")


# ------------------------------------------------------------------------- atomic writes

def test_atomic_write_leaves_nothing_on_error(tmp_path, saved, monkeypatch):
    before = saved.read_bytes()

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save(saved, model(), method="progressive")
    assert saved.read_bytes() == before                      # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp file left
    with pytest.raises(OSError):
        save(tmp_path / "new.safetensors", model(), method="progressive")
    assert not (tmp_path / "new.safetensors").exists()


def test_save_replaces_and_is_readable_by_others(saved):
    save(saved, {"only": random_packed(9)}, method="fixed")
    assert list(load(saved)) == ["only"]
    assert oct(os.stat(saved).st_mode & 0o777) == oct(0o644)
    assert len(list(saved.parent.iterdir())) == 1


# ------------------------------------------------------------------------- bad arguments to save

@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(path="m.bin"), ValueError, "^path: must end in .safetensors"),
    (dict(path="nope/m.safetensors"), FileNotFoundError, "^path: folder"),
    (dict(matrices={}), ValueError, "^matrices: must be a non-empty dict"),
    (dict(matrices={"w": np.zeros(3)}), TypeError, r"^matrices\['w'\]: must be a PackedBCQ"),
    (dict(matrices={"": random_packed(0)}), ValueError, "^matrices: names must be non-empty strings"),
    (dict(method=""), ValueError, "^method: must be a non-empty string"),
    (dict(extra_meta={"a": object()}), TypeError, "^extra_meta: must be JSON-serialisable"),
    (dict(extra_meta=[1]), TypeError, "^extra_meta: must be a dict"),
    (dict(matrix_meta={"other": {}}), ValueError, "^matrix_meta: names"),
    (dict(matrix_meta={"w": {"shape": [1, 1]}}), ValueError, r"^matrix_meta\['w'\]: may not set"),
])
def test_save_rejects(tmp_path, kwargs, exc, match):
    args = dict(path="m.safetensors", matrices={"w": random_packed(0)}, method="progressive")
    args.update(kwargs)
    path = tmp_path / args.pop("path")
    with pytest.raises(exc, match=match):
        save(path, args.pop("matrices"), **args)
    assert list(tmp_path.iterdir()) == []


def test_save_revalidates_a_mutated_matrix(tmp_path):
    q = random_packed(0)
    q.alpha[2] = q.alpha[2].astype(np.float32)
    with pytest.raises(ValueError, match=r"^alpha\[2\]: must be float16"):
        save(tmp_path / "m.safetensors", {"w": q}, method="progressive")


# ------------------------------------------------------------------------- bad files

def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="not a file"):
        load(tmp_path)


@pytest.mark.parametrize("content, match", [
    (b"", "shorter than the 8-byte header length"),
    (b"\x01\x02", "shorter than the 8-byte header length"),
    (struct.pack("<Q", 10 ** 6) + b"{}", "header length 1000000 does not fit"),
    (struct.pack("<Q", 4) + b"{{{{", "not valid JSON"),
    (struct.pack("<Q", 2) + b"[]", "a JSON object was expected"),
    (struct.pack("<Q", 2) + b"{}", "no 'bcq-packed' metadata"),
])
def test_not_a_safetensors_file(tmp_path, content, match):
    (tmp_path / "x.safetensors").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load(tmp_path / "x.safetensors")


def test_every_truncation_is_refused(saved):
    data = saved.read_bytes()
    for cut in list(range(0, 600, 7)) + list(range(len(data) - 64, len(data))):
        saved.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=re.escape(str(saved))):
            load(saved)


def test_flipped_header_bytes(saved):
    data = saved.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = data[8:8 + n]
    for target, match in [(b'{"', "not valid JSON"), (b'"shape"', "corrupted safetensors header"),
                          (b'"matrices"', "corrupted metadata|missing or invalid"),
                          (b'"lm_head.planes"', "missing|unexpected")]:
        i = 8 + header.index(target) + 1
        bad = bytearray(data)
        bad[i] ^= 0x01
        saved.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match=match):
            load(saved)
    bad = bytearray(data)
    bad[0] ^= 0x40  # the header length itself
    saved.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="does not fit|not valid JSON"):
        load(saved)


@settings(max_examples=150, deadline=None)
@given(where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_any_flipped_byte_is_caught_or_harmless(tmp_path_factory, where, mask):
    """A flip anywhere either raises ValueError or hit free text (a method name, JSON spacing) only."""
    path = tmp_path_factory.mktemp("flip") / "m.safetensors"
    mats = model()
    save(path, mats, method="progressive")
    bad = bytearray(path.read_bytes())
    bad[int(where * len(bad))] ^= mask
    path.write_bytes(bytes(bad))
    try:
        back = load(path)
    except ValueError:
        return
    assert list(back) == list(mats)
    for name in mats:
        assert_same(back[name], mats[name])


def test_data_corruption_fails_the_crc(saved):
    data = bytearray(saved.read_bytes())
    data[-3] ^= 0x10
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="fails its CRC-32 check"):
        load(saved)


def test_missing_tensor(saved):
    tensors, meta = raw(saved)
    del tensors["lm_head.alpha.3"]
    rewrite(saved, tensors, meta)
    with pytest.raises(ValueError, match="tensor 'lm_head.alpha.3' promised by the metadata is missing"):
        load(saved)


def test_unexpected_tensor(saved):
    tensors, meta = raw(saved)
    tensors["lm_head.alpha.9"] = np.ones((9, 3, 2), np.float16)
    rewrite(saved, tensors, meta)
    with pytest.raises(ValueError, match="unexpected tensor 'lm_head.alpha.9'"):
        load(saved)


@pytest.mark.parametrize("name, array, match", [
    ("lm_head.planes", np.zeros((4, 3, 3), np.uint32), r"'lm_head.planes' must be U32 \(4, 3, 4\).*got U32 \(4, 3, 3\)"),
    ("lm_head.planes", np.zeros((4, 3, 4), np.int32), "must be U32 .* got I32"),
    ("lm_head.alpha.2", np.ones((2, 3, 2), np.float32), "'lm_head.alpha.2' must be F16 .* got F32"),
    ("lm_head.alpha.2", np.ones((2, 3, 1), np.float16), r"must be F16 \(2, 3, 2\)"),
])
def test_wrong_shape_or_dtype(saved, name, array, match):
    tensors, meta = raw(saved)
    tensors[name] = array
    rewrite(saved, tensors, meta)
    with pytest.raises(ValueError, match=match):
        load(saved)


def _edit_matrix_meta(saved, name, **changes):
    tensors, meta = raw(saved)
    matrices = json.loads(meta["matrices"])
    matrices[name].update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del matrices[name][k]
    rewrite(saved, tensors, {**meta, "matrices": json.dumps(matrices)})


@pytest.mark.parametrize("changes, match", [
    (dict(num_planes=3), r"precisions \[2, 3, 4\] need more than its 3 planes"),
    (dict(num_planes=5), r"'lm_head.planes' must be U32 \(5, 3, 4\)"),
    (dict(shape=[3, 256]), r"'lm_head.planes' must be U32 \(4, 3, 8\)"),
    (dict(shape=[3, 100]), "'shape' is missing or invalid"),
    (dict(precisions=[2, 3]), "unexpected tensor 'lm_head.alpha.4'"),
    (dict(precisions=[2, 3, 4, 5]), "need more than"),
    (dict(offsets=True), "tensor 'lm_head.beta.2' promised by the metadata is missing"),
    (dict(group_size=None), "'group_size' is missing or invalid"),
    (dict(group_size="64"), "'group_size' is missing or invalid"),
    (dict(group_size=128), r"'lm_head.alpha.2' must be F16 \(2, 3, 1\)"),
    (dict(source_dtype=None), "'source_dtype' is missing or invalid"),
])
def test_metadata_tensor_mismatch(saved, changes, match):
    _edit_matrix_meta(saved, "lm_head", **changes)
    with pytest.raises(ValueError, match=match):
        load(saved)


def test_group_size_passes_shapes_but_not_packed_validation(tmp_path):
    # K = 96, g = 48: G = 2 is consistent, but 48 is no whole number of 32-bit words.
    path = tmp_path / "m.safetensors"
    tensors = {"w.planes": np.zeros((2, 1, 3), np.uint32), "w.alpha.2": np.ones((2, 1, 2), np.float16)}
    meta = {"format": "bcq-packed", "format_version": "1", "method": "x", "extra": "{}",
            "matrices": json.dumps({"w": {"shape": [1, 96], "group_size": 48, "precisions": [2], "num_planes": 2,
                                          "source_dtype": "float32", "method": "x", "offsets": False}})}
    rewrite(path, tensors, meta)
    with pytest.raises(ValueError, match="matrix 'w': group_size: must be a positive multiple of 32"):
        load(path)


@pytest.mark.parametrize("key, value, match", [
    ("format", "gguf", "format is 'gguf', expected 'bcq-packed'"),
    ("format_version", "2", r"format_version 2 is not supported"),
    ("format_version", "one", "format_version must be an integer"),
    ("matrices", "{not json", "corrupted metadata"),
    ("matrices", "{}", "'matrices' must be a non-empty JSON object"),
    ("matrices", json.dumps({"w": 3}), "metadata of matrix 'w' must be a JSON object"),
    ("crc32", json.dumps({"w": "x"}), "'crc32' must map tensor names to integers"),
])
def test_bad_file_metadata(saved, key, value, match):
    tensors, meta = raw(saved)
    meta[key] = value
    rewrite(saved, tensors, meta, fix_crc=False)
    with pytest.raises(ValueError, match=match):
        load(saved)


def test_crc_list_must_match(saved):
    tensors, meta = raw(saved)
    crc = json.loads(meta["crc32"])
    crc.pop("lm_head.planes")
    rewrite(saved, tensors, {**meta, "crc32": json.dumps(crc)}, fix_crc=False)
    with pytest.raises(ValueError, match="'crc32' does not list exactly"):
        load(saved)


def test_non_finite_scales(saved):
    tensors, meta = raw(saved)
    tensors["lm_head.alpha.3"] = tensors["lm_head.alpha.3"].copy()
    tensors["lm_head.alpha.3"][0, 0, 0] = np.inf
    rewrite(saved, tensors, meta)
    with pytest.raises(ValueError, match=r"tensor 'lm_head.alpha.3' holds 1 NaN/Inf scales"):
        load(saved)


def test_plain_safetensors_is_not_a_model(tmp_path):
    safetensors.numpy.save_file({"w": np.ones((2, 32), np.float32)}, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="not a BCQ model file"):
        read_meta(tmp_path / "w.safetensors")


def test_read_tensor_bf16_is_exact(tmp_path):
    """BF16 -> float32 by shifting the 16 bits into the high half: exact for every bf16 value."""
    bits = np.array([[0x3F80, 0xC000, 0x0001, 0x7F7F], [0x0000, 0x8000, 0x4049, 0x3EAA]], dtype="<u2")
    expected = (bits.astype(np.uint32) << 16).view(np.float32)
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 4], "data_offsets": [0, 16]}}).encode()
    (tmp_path / "b.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bits.tobytes())
    entries, _, start = fileio.read_safetensors_header(tmp_path / "b.safetensors")
    got = fileio.read_tensor(tmp_path / "b.safetensors", entries["w"], start)
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    assert got[0, 0] == 1.0 and got[0, 1] == -2.0

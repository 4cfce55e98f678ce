r"""Model files: named ``PackedBCQ`` matrices in one safetensors file, validated on load.

Tensors of a matrix called ``name`` (the layout is ``bcq_core.layout``'s):

    {name}.planes      uint32  [P, N, K/32]
    {name}.alpha.{p}   float16 [p, N, G]     one per stored precision p
    {name}.beta.{p}    float16 [N, G]        asymmetric BCQ only

Metadata (safetensors string -> string; FORMAT_KEYS):

    format           "bcq-packed"
    format_version   "1"
    method           how the file was made: "progressive", "joint", "fixed", ...
    matrices         JSON {name: {"shape": [N, K], "group_size": g, "precisions": [2, 3, 4],
                                  "num_planes": P, "source_dtype": "bfloat16", "method": "...",
                                  "offsets": false, ...caller's per-matrix keys}}
    extra            JSON object of the caller's extra metadata ("{}" when none)
    crc32            JSON {tensor name: CRC-32 of its bytes}: a flipped bit in the data is caught too

``load`` trusts nothing in the file: the header is parsed by hand first (so a truncated file or a
flipped byte gets a message naming the path and the fault, not a library trace), then every tensor
the metadata promises must be there with its dtype and shape, nothing else may be, scales must be
finite, and each matrix passes ``validate_packed``.  ``save`` writes a temporary file in the target
folder, fsyncs it and ``os.replace``s it over the target, so readers see the old file or the new one,
never half of one.  Nothing is pickled.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from .layout import WORD_BITS, PackedBCQ, from_official, to_official, validate_packed

FORMAT_NAME = "bcq-packed"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
FORMAT_KEYS = ("format", "format_version", "method", "matrices", "extra", "crc32")
MATRIX_KEYS = ("shape", "group_size", "precisions", "num_planes", "source_dtype", "method", "offsets")
OFFICIAL_FORMAT_NAME = "anybcq-official"

# safetensors dtype codes we read; BF16 has no NumPy dtype and is widened to float32 by read_tensor.
ST_DTYPES = {"BOOL": "?", "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2", "U32": "<u4", "I32": "<i4",
             "U64": "<u8", "I64": "<i8", "F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "<u2"}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


# ---------------------------------------------------------------- raw safetensors header + reads

def read_safetensors_header(path) -> tuple[dict, dict | None, int]:
    """(tensor entries {name: {"dtype", "shape", "data_offsets"}}, metadata or None, data start byte).

    Layout of a safetensors file: u64 little-endian header length n, n bytes of JSON, then the data
    buffer; each entry's data_offsets are relative to the buffer.  Raises FileNotFoundError or a
    ValueError naming ``path`` and the fault (truncated, not JSON, offsets outside the file, ...).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not a safetensors file: {size} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise ValueError(f"{path}: not a safetensors file or truncated: header length {n} does not fit "
                             f"in the file's {size} bytes")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupted safetensors header (not valid JSON: {e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupted safetensors header (a JSON object was expected)")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise ValueError(f"{path}: corrupted safetensors header (__metadata__ must map strings to strings)")
    data_start, data_len = 8 + n, size - 8 - n
    for name, e in header.items():
        ok = (isinstance(e, dict) and e.get("dtype") in ST_DTYPES and isinstance(e.get("shape"), list)
              and all(isinstance(d, int) and d >= 0 for d in e["shape"])
              and isinstance(e.get("data_offsets"), list) and len(e["data_offsets"]) == 2
              and all(isinstance(o, int) for o in e["data_offsets"]))
        if not ok:
            raise ValueError(f"{path}: corrupted safetensors header (bad or unsupported entry for tensor "
                             f"'{name}': {str(e)[:120]})")
        begin, end = e["data_offsets"]
        nbytes = int(np.prod(e["shape"], dtype=np.int64)) * np.dtype(ST_DTYPES[e["dtype"]]).itemsize
        if not 0 <= begin <= end or end - begin != nbytes:
            raise ValueError(f"{path}: corrupted safetensors header (tensor '{name}': offsets {begin}..{end} "
                             f"do not hold {e['dtype']} {tuple(e['shape'])})")
        if end > data_len:
            raise ValueError(f"{path}: truncated: tensor '{name}' ends at byte {data_start + end}, "
                             f"the file has {size}")
    return header, meta, data_start


def read_tensor(path, entry: dict, data_start: int) -> np.ndarray:
    """One tensor by its header entry; BF16 becomes float32 exactly (the 16 bits are the high half)."""
    begin, _ = entry["data_offsets"]
    shape = tuple(entry["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    a = np.fromfile(path, dtype=ST_DTYPES[entry["dtype"]], count=count, offset=data_start + begin)
    if entry["dtype"] == "BF16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return a.reshape(shape)


def _load_all(path: Path) -> dict[str, np.ndarray]:
    try:
        return safetensors.numpy.load_file(path)
    except (SafetensorError, OSError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a valid safetensors file ({e})") from None


# ---------------------------------------------------------------------------------- save

def _tensor_names(name: str, precisions, offsets: bool) -> dict[str, str]:
    """{tensor name: role} of one matrix; role is 'planes', 'alpha.p' or 'beta.p'."""
    roles = ["planes"] + [f"alpha.{p}" for p in precisions] + ([f"beta.{p}" for p in precisions] if offsets else [])
    return {f"{name}.{r}": r for r in roles}


def atomic_write(path, write) -> None:
    """write(tmp_path) into a temp file beside path, fsync, os.replace; the temp file never survives.

    Readers see the old file or the new one, never a partial one; on any error the target is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the model from other users
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (not possible on every OS)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_text(path, text: str) -> None:
    """atomic_write for a text file (reports, JSON results); creates the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def check_out_path(path, suffix: str = ".safetensors") -> Path:
    """path as a Path, if it ends in suffix and its folder exists (ValueError / FileNotFoundError naming `path`)."""
    path = Path(path)
    if path.suffix != suffix:
        raise ValueError(f"path: must end in {suffix}, got '{path}'")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: folder '{path.parent}' does not exist")
    return path


def _json_object(name: str, obj) -> str:
    if obj is None:
        return "{}"
    if not isinstance(obj, Mapping):
        raise TypeError(f"{name}: must be a dict, got {type(obj).__name__}")
    try:
        return json.dumps(dict(obj))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name}: must be JSON-serialisable ({e})") from None


def save(path, matrices: Mapping[str, PackedBCQ], *, method: str, extra_meta: Mapping | None = None,
         matrix_meta: Mapping[str, Mapping] | None = None) -> Path:
    """Write ``matrices`` to ``path`` (a .safetensors file) atomically; returns the path.

    method: how they were quantized (file-level; also the default of each matrix's "method").
    extra_meta: JSON-serialisable dict stored under "extra".
    matrix_meta: {name: dict} of extra per-matrix keys (JSON values), e.g. {"source": "W", "bits": 2};
        it may override "method" but no other key of MATRIX_KEYS.
    """
    path = check_out_path(path)
    if not isinstance(matrices, Mapping) or not matrices:
        raise ValueError("matrices: must be a non-empty dict {name: PackedBCQ}")
    if not isinstance(method, str) or not method:
        raise ValueError(f"method: must be a non-empty string, got {method!r}")
    matrix_meta = dict(matrix_meta or {})
    if set(matrix_meta) - set(matrices):
        raise ValueError(f"matrix_meta: names {sorted(set(matrix_meta) - set(matrices))} are not in matrices")
    tensors, entries = {}, {}
    for name, q in matrices.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"matrices: names must be non-empty strings, got {name!r}")
        if not isinstance(q, PackedBCQ):
            raise TypeError(f"matrices['{name}']: must be a PackedBCQ, got {type(q).__name__}")
        validate_packed(q)  # it may have been changed since it was built
        extra = dict(matrix_meta.get(name, {}))
        if set(extra) & (set(MATRIX_KEYS) - {"method"}):
            raise ValueError(f"matrix_meta['{name}']: may not set {sorted(set(extra) & set(MATRIX_KEYS))}")
        entries[name] = {"shape": list(q.shape), "group_size": int(q.group_size), "precisions": list(q.precisions),
                         "num_planes": q.num_planes, "source_dtype": str(q.source_dtype), "method": method,
                         "offsets": q.beta is not None, **extra}
        arrays = {"planes": q.planes, **{f"alpha.{p}": a for p, a in q.alpha.items()},
                  **{f"beta.{p}": b for p, b in (q.beta or {}).items()}}
        for tname, role in _tensor_names(name, q.precisions, q.beta is not None).items():
            tensors[tname] = np.ascontiguousarray(arrays[role])
    metadata = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "method": method,
                "matrices": _json_object("matrix_meta", entries), "extra": _json_object("extra_meta", extra_meta),
                "crc32": json.dumps({t: zlib.crc32(a) for t, a in tensors.items()})}
    atomic_write(path, lambda tmp: safetensors.numpy.save_file(tensors, tmp, metadata=metadata))
    return path


# ---------------------------------------------------------------------------------- load

def _parse_meta(path: Path, raw: dict | None) -> dict:
    """The metadata as Python values, every key and type checked."""
    if not raw or "format" not in raw:
        raise ValueError(f"{path}: no '{FORMAT_NAME}' metadata: not a BCQ model file (write one with bcq quantize "
                         f"or bcq_core.fileio.save)")
    if raw["format"] != FORMAT_NAME:
        raise ValueError(f"{path}: format is '{raw['format']}', expected '{FORMAT_NAME}'")
    try:
        version = int(raw.get("format_version", ""))
    except ValueError:
        raise ValueError(f"{path}: format_version must be an integer, got {raw.get('format_version')!r}") from None
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: format_version {version} is not supported (this code reads {SUPPORTED_VERSIONS})")
    try:
        matrices = json.loads(raw.get("matrices", ""))
        extra = json.loads(raw.get("extra", "{}"))
        crc = json.loads(raw.get("crc32", ""))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupted metadata (not valid JSON: {e})") from None
    if not isinstance(matrices, dict) or not matrices or not isinstance(extra, dict):
        raise ValueError(f"{path}: corrupted metadata ('matrices' must be a non-empty JSON object)")
    if not isinstance(crc, dict) or not all(isinstance(v, int) for v in crc.values()):
        raise ValueError(f"{path}: corrupted metadata ('crc32' must map tensor names to integers)")
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0  # noqa: E731
    rules = {"shape": lambda v: isinstance(v, list) and len(v) == 2 and all(map(is_int, v)) and v[1] % WORD_BITS == 0,
             "group_size": is_int, "num_planes": is_int,
             "precisions": lambda v: isinstance(v, list) and v and all(map(is_int, v)) and len(set(v)) == len(v),
             "source_dtype": lambda v: isinstance(v, str), "method": lambda v: isinstance(v, str),
             "offsets": lambda v: isinstance(v, bool)}
    for name, m in matrices.items():
        if not isinstance(m, dict):
            raise ValueError(f"{path}: metadata of matrix '{name}' must be a JSON object")
        for key, ok in rules.items():
            if key not in m or not ok(m[key]):
                raise ValueError(f"{path}: metadata of matrix '{name}': '{key}' is missing or invalid "
                                 f"(got {m.get(key)!r})")
        if max(m["precisions"]) > m["num_planes"]:
            raise ValueError(f"{path}: metadata of matrix '{name}': precisions {m['precisions']} need more than "
                             f"its {m['num_planes']} planes")
        m["shape"], m["precisions"] = tuple(m["shape"]), tuple(sorted(m["precisions"]))
    return {"format": FORMAT_NAME, "format_version": version, "method": raw.get("method", ""),
            "matrices": matrices, "extra": extra, "crc32": crc}


def _expected(meta: dict) -> dict[str, tuple[str, tuple, str, str]]:
    """{tensor name: (safetensors dtype, shape, matrix name, role)} the metadata promises."""
    out = {}
    for name, m in meta["matrices"].items():
        (N, K), g, P = m["shape"], m["group_size"], m["num_planes"]
        G = K // g if K % g == 0 else -1  # -1 never matches: the shape check below reports it
        for tname, role in _tensor_names(name, m["precisions"], m["offsets"]).items():
            if role == "planes":
                out[tname] = ("U32", (P, N, K // WORD_BITS), name, role)
            elif role.startswith("alpha"):
                out[tname] = ("F16", (int(role[6:]), N, G), name, role)
            else:
                out[tname] = ("F16", (N, G), name, role)
    return out


def read_meta(path) -> dict:
    """The validated metadata of a model file, without reading its tensors (cheap).

    {"format", "format_version", "method", "matrices": {name: {...MATRIX_KEYS, ...}}, "extra": {...}}.
    The tensors' presence, dtypes and shapes are checked against it from the header.
    """
    path = Path(path)
    header, raw, _ = read_safetensors_header(path)
    meta = _parse_meta(path, raw)
    expected = _expected(meta)
    missing = sorted(set(expected) - set(header))
    if missing:
        raise ValueError(f"{path}: tensor '{missing[0]}' promised by the metadata is missing"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unexpected = sorted(set(header) - set(expected))
    if unexpected:
        raise ValueError(f"{path}: unexpected tensor '{unexpected[0]}' not described by the metadata"
                         + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    if set(meta["crc32"]) != set(expected):
        raise ValueError(f"{path}: corrupted metadata ('crc32' does not list exactly the file's tensors)")
    for tname, (dtype, shape, name, role) in expected.items():
        got = (header[tname]["dtype"], tuple(header[tname]["shape"]))
        if got != (dtype, shape):
            raise ValueError(f"{path}: tensor '{tname}' must be {dtype} {shape} by the metadata of '{name}', "
                             f"got {got[0]} {got[1]}")
    return meta


def load_with_meta(path) -> tuple[dict[str, PackedBCQ], dict]:
    """(matrices, metadata) of a model file; every check of ``read_meta`` plus the data's."""
    path = Path(path)
    meta = read_meta(path)
    tensors = _load_all(path)
    for tname, a in tensors.items():
        if zlib.crc32(np.ascontiguousarray(a)) != meta["crc32"][tname]:
            raise ValueError(f"{path}: tensor '{tname}' fails its CRC-32 check: the data is corrupted")
    out = {}
    for name, m in meta["matrices"].items():
        alpha = {p: tensors[f"{name}.alpha.{p}"] for p in m["precisions"]}
        beta = {p: tensors[f"{name}.beta.{p}"] for p in m["precisions"]} if m["offsets"] else None
        for kind, scales in (("alpha", alpha), ("beta", beta or {})):
            for p, a in scales.items():
                if not np.isfinite(a).all():
                    raise ValueError(f"{path}: tensor '{name}.{kind}.{p}' holds "
                                     f"{int((~np.isfinite(a)).sum())} NaN/Inf scales")
        try:
            out[name] = PackedBCQ(planes=tensors[f"{name}.planes"], alpha=alpha, group_size=m["group_size"],
                                  beta=beta, source_dtype=m["source_dtype"])
        except ValueError as e:
            raise ValueError(f"{path}: matrix '{name}': {e}") from None
    return out, meta


def load(path) -> dict[str, PackedBCQ]:
    """{name: PackedBCQ} of a model file written by ``save``; refuses anything inconsistent."""
    return load_with_meta(path)[0]


# ------------------------------------------------------------------- official AnyBCQ layout

def save_official(path, matrices: Mapping[str, PackedBCQ]) -> Path:
    """The official AnyBCQ tensors of each matrix as ``{name}.qweight`` / ``.alpha_{p}`` / ``.beta_{p}``.

    qweight int32 [K/32, P, N], alpha_p float16 [G, p, N], beta_p float16 [G, N] (``layout.to_official``).
    """
    path = check_out_path(path)
    if not isinstance(matrices, Mapping) or not matrices:
        raise ValueError("matrices: must be a non-empty dict {name: PackedBCQ}")
    tensors = {f"{name}.{k}": v for name, q in matrices.items() for k, v in to_official(q).items()}
    meta = {"format": OFFICIAL_FORMAT_NAME, "group_sizes": json.dumps({n: int(q.group_size) for n, q in matrices.items()})}
    atomic_write(path, lambda tmp: safetensors.numpy.save_file(tensors, tmp, metadata=meta))
    return path


def load_official(path) -> dict[str, PackedBCQ]:
    """Every ``{name}.qweight`` group of an official-layout file (other tensors are ignored).

    g is K / G (K = 32 * qweight.shape[0], G = alpha_p.shape[0]), so no metadata is needed.
    """
    path = Path(path)
    read_safetensors_header(path)
    tensors = _load_all(path)
    out = {}
    for tname in sorted(t for t in tensors if t == "qweight" or t.endswith(".qweight")):
        name = tname[: -len("qweight")].rstrip(".")
        pre = f"{name}." if name else ""
        group = {k[len(pre):]: v for k, v in tensors.items()
                 if k.startswith(pre) and k[len(pre):].split("_")[0] in ("qweight", "alpha", "beta")
                 and "." not in k[len(pre):]}
        alphas = [v for k, v in group.items() if k.startswith("alpha_")]
        if not alphas or alphas[0].ndim != 3:
            raise ValueError(f"{path}: matrix '{name}' has no alpha_p float16 [G, p, N] tensor")
        K, G = group["qweight"].shape[0] * WORD_BITS, alphas[0].shape[0]
        if K % G:
            raise ValueError(f"{path}: matrix '{name}': K={K} is not a multiple of G={G}")
        try:
            out[name] = from_official(group, group_size=K // G)
        except ValueError as e:
            raise ValueError(f"{path}: matrix '{name}': {e}") from None
    if not out:
        raise ValueError(f"{path}: no '.qweight' tensors: not an official AnyBCQ file")
    return out

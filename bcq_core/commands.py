"""``bcq quantize``, ``bcq info`` and ``bcq error``: the format's command-line face (docs/cli.md).

    bcq quantize IN -o OUT.safetensors --bits 2,3,4 --group-size 128 [--iters 20]
                 [--method progressive|joint|fixed] [--asymmetric] [--json]
    bcq info FILE [--json]
    bcq error FILE --against IN [--json]

IN is a ``.npy`` file (one 2-D matrix, named by the file stem) or a ``.safetensors`` file of 2-D float
tensors (float16, bfloat16, float32, float64; anything else is skipped with a warning on stderr).
Every argument is checked before any quantization starts, and a bad one raises ValueError/TypeError/
OSError with a message that starts with the argument's name; ``bcq_core.cli`` prints it on one line
and exits 2.  Human output is aligned tables on stdout; ``--json`` prints one JSON document instead.
Progress and warnings go to stderr.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import fileio
from .checks import check_bits, check_group_size, check_matrix
from .memory import MemoryBreakdown, memory_of, memory_of_meta, model_memory

METHODS = ("progressive", "joint", "fixed")
FLOAT_CODES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


# ------------------------------------------------------------------------------ input weights

@dataclass
class Weight:
    """One input matrix, read only when ``load()`` is called (a model's weights need not fit twice)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    load: Callable[[], np.ndarray]


def _check_input_path(arg: str, path) -> Path:
    path = Path(path)
    if path.suffix not in (".npy", ".safetensors"):
        raise ValueError(f"{arg}: must be a .npy or .safetensors file, got '{path}'")
    if not path.is_file():
        raise FileNotFoundError(f"{arg}: no such file '{path}'")
    return path


def read_weights(arg: str, path, warn=None) -> list[Weight]:
    """The 2-D float matrices of a .npy or .safetensors file; ``arg`` names the argument in errors."""
    path = _check_input_path(arg, path)
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    if path.suffix == ".npy":
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            why = "it holds Python objects, which are never unpickled" if "object" in str(e) else e
            raise ValueError(f"{arg}: '{path}' is not a readable .npy file ({why})") from None
        if a.ndim != 2:
            raise ValueError(f"{arg}: '{path}' must hold one 2-D matrix (N, K), got shape {a.shape}")
        if str(a.dtype) not in FLOAT_CODES.values():
            raise TypeError(f"{arg}: '{path}' must hold floats ({', '.join(FLOAT_CODES.values())}), got {a.dtype}")
        return [Weight(path.stem, a.shape, str(a.dtype), lambda: np.asarray(a))]
    try:
        header, _, start = fileio.read_safetensors_header(path)
    except ValueError as e:
        raise ValueError(f"{arg}: {e}") from None
    out = []
    for name, e in header.items():
        shape = tuple(e["shape"])
        if len(shape) != 2 or e["dtype"] not in FLOAT_CODES:
            warn(f"warning: {arg}: skipping '{name}' ({e['dtype']} {shape}): not a 2-D float matrix")
            continue
        out.append(Weight(name, shape, FLOAT_CODES[e["dtype"]], lambda e=e: fileio.read_tensor(path, e, start)))
    if not out:
        raise ValueError(f"{arg}: '{path}' has no 2-D float tensor to quantize ({len(header)} tensors in the file)")
    return out


# ------------------------------------------------------------------------------ formatting

def fmt_bytes(n: float) -> str:
    """Decimal units, as the paper's GB: 1 KB = 1e3 B."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def table(headers: list[str], rows: list[list]) -> str:
    """Aligned text table: columns of numbers (every cell starts with a digit) right-aligned, text left."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [bool(cells) and all(c[i][:1].isdigit() for c in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) if num else c.ljust(w)  # noqa: E731
                               for c, w, num in zip(r, widths, numeric)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _shape(s) -> str:
    return " x ".join(map(str, s))


def _bits(ps) -> str:
    return ",".join(map(str, ps))


def _count(n: int) -> str:
    return f"{n} matrix" if n == 1 else f"{n} matrices"


def _emit(args, doc: dict, text: str) -> None:
    print(json.dumps(doc, indent=2) if args.json else text)


# ------------------------------------------------------------------------------ bcq quantize

def parse_bits(text: str) -> tuple[int, ...]:
    """'2,3,4' -> (2, 3, 4): distinct consecutive precisions in 1..8."""
    try:
        bits = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"--bits: must be comma-separated integers such as 2,3,4, got '{text}'") from None
    return check_bits("--bits", bits)


def parse_int(arg: str, text) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{arg}: must be an integer, got '{text}'") from None


def cmd_quantize(args) -> int:
    src = _check_input_path("IN", args.input)
    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise ValueError(f"-o: must end in .safetensors, got '{out}'")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"-o: folder '{out.parent}' does not exist")
    if out.resolve() == src.resolve():
        raise ValueError(f"-o: must differ from IN ('{out}')")
    bits, g, iters = parse_bits(args.bits), parse_int("--group-size", args.group_size), parse_int("--iters", args.iters)
    if iters < 0:
        raise ValueError(f"--iters: must be >= 0, got {iters}")
    if args.method not in METHODS:
        raise ValueError(f"--method: must be one of {', '.join(METHODS)}, got '{args.method}'")
    weights = read_weights("IN", src)
    for w in weights:
        check_group_size(f"--group-size (matrix '{w.name}', shape {w.shape})", g, w.shape[1])
    for w in weights:  # a full read before any work: a NaN in the last matrix must not cost the others' time
        check_matrix(f"IN: matrix '{w.name}'", w.load())

    from tqdm import tqdm  # the quantizers (numba) load only once the arguments are known good

    from .layout import pack
    from .quantize import QuantConfig, quantize, quantize_fixed

    config = QuantConfig(bits=bits, group_size=g, iters=iters, method=args.method,
                         asymmetric=args.asymmetric)
    packed, matrix_meta, rows, t_all = {}, {}, [], time.perf_counter()
    for w in tqdm(weights, desc="quantize", unit="matrix", file=sys.stderr):
        W = check_matrix(f"IN: matrix '{w.name}'", w.load())
        t0 = time.perf_counter()
        if args.method == "fixed":
            entries = {f"{w.name}@{p}bit": (b, {"source": w.name, "bits": p})
                       for p, b in sorted(quantize_fixed(W, config).items())}
        else:
            entries = {w.name: (quantize(W, config), {"source": w.name})}
        seconds = time.perf_counter() - t0
        for name, (bcq, meta) in entries.items():
            packed[name], matrix_meta[name] = pack(bcq, source_dtype=w.dtype), meta
            rows.append({"name": name, "source": w.name, "shape": list(w.shape),
                         "precisions": list(packed[name].precisions), "num_planes": packed[name].num_planes,
                         "bytes": memory_of(packed[name]).total_bytes, "seconds": round(seconds, 3)})
    extra = {"tool": "bcq quantize", "input": src.name, "bits": list(bits), "group_size": g, "iters": iters,
             "asymmetric": bool(args.asymmetric)}
    fileio.save(out, packed, method=args.method, extra_meta=extra, matrix_meta=matrix_meta)
    mem = model_memory(packed)
    doc = {"output": str(out), "input": str(src), "method": args.method, "bits": list(bits),
           "group_size": g, "iters": iters, "asymmetric": bool(args.asymmetric),
           "matrices": rows, "memory": mem.to_dict(), "file_bytes": out.stat().st_size,
           "seconds": round(time.perf_counter() - t_all, 3)}
    text = "\n".join([
        f"wrote {out}: {_count(len(packed))}, method {args.method}, bits {_bits(bits)}, g {g}, "
        f"{doc['seconds']:.1f} s", "",
        table(["matrix", "shape", "bits", "planes", "stored", "seconds"],
              [[r["name"], _shape(r["shape"]), _bits(r["precisions"]), r["num_planes"], fmt_bytes(r["bytes"]),
                r["seconds"]] for r in rows]), "",
        _summary(mem)])
    _emit(args, doc, text)
    return 0


def _summary(mem) -> str:
    return (f"stored {fmt_bytes(mem.total_bytes)}; as {len(mem.precisions)} separate models "
            f"{fmt_bytes(mem.separate_bytes)}; saving {fmt_bytes(mem.saving_bytes)} ({100 * mem.saving_fraction:.1f} %)")


# ------------------------------------------------------------------------------ bcq info

def _load_model(arg: str, path):
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{arg}: must be a .safetensors model file, got '{path}'")
    try:
        return fileio.load_with_meta(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{arg}: no such file '{path}'") from None
    except ValueError as e:
        raise ValueError(f"{arg}: {e}") from None


def cmd_info(args) -> int:
    matrices, meta = _load_model("FILE", args.file)
    mems = {name: memory_of_meta(m) for name, m in meta["matrices"].items()}
    total = sum(mems.values(), MemoryBreakdown(0, 0))
    doc = {"file": str(args.file), "format": meta["format"], "format_version": meta["format_version"],
           "method": meta["method"], "file_bytes": Path(args.file).stat().st_size, "extra": meta["extra"],
           "matrices": {name: {**{k: list(v) if isinstance(v, tuple) else v for k, v in m.items()},
                               "memory": mems[name].to_dict()} for name, m in meta["matrices"].items()},
           "memory": total.to_dict()}
    rows = [[name, _shape(m["shape"]), m["group_size"], _bits(m["precisions"]), m["num_planes"],
             "yes" if m["offsets"] else "no", m["method"], m["source_dtype"], fmt_bytes(mems[name].total_bytes)]
            for name, m in meta["matrices"].items()]
    per_p = [[p, fmt_bytes(total.first_planes_bytes[p]), fmt_bytes(total.alpha_bytes[p]),
              fmt_bytes(total.beta_bytes.get(p, 0)), fmt_bytes(total.read_bytes(p))] for p in total.precisions]
    text = "\n".join([
        f"{args.file}: format {meta['format']} v{meta['format_version']}, method {meta['method']}, "
        f"{_count(len(matrices))}, {fmt_bytes(doc['file_bytes'])} on disk", "",
        table(["matrix", "shape", "g", "bits", "planes", "offsets", "method", "source dtype", "stored"], rows), "",
        table(["bits", "planes read", "alpha", "beta", "a call reads"], per_p), "",
        f"planes {fmt_bytes(total.planes_bytes)} + scales {fmt_bytes(total.scale_bytes)} = {fmt_bytes(total.total_bytes)}",
        _summary(total)])
    _emit(args, doc, text)
    return 0


# ------------------------------------------------------------------------------ bcq error

def cmd_error(args) -> int:
    from .bcq import relative_error
    from .layout import unpack

    matrices, meta = _load_model("FILE", args.file)
    weights = {w.name: w for w in read_weights("--against", args.against, warn=lambda msg: None)}
    wanted = {name: meta["matrices"][name].get("source", name) for name in matrices}
    for name, source in wanted.items():  # every check before the first dequantization
        if source not in weights:
            raise ValueError(f"--against: '{args.against}' has no matrix '{source}' (it has {sorted(weights)[:8]})")
        if tuple(weights[source].shape) != matrices[name].shape:
            raise ValueError(f"--against: matrix '{source}' is {weights[source].shape}, the file's '{name}' "
                             f"is {matrices[name].shape}")
    rows, cache = [], {}
    for name, q in matrices.items():
        source = wanted[name]
        if source not in cache:
            cache = {source: check_matrix(f"--against: matrix '{source}'", weights[source].load())}
        bcq = unpack(q)
        for p in q.precisions:
            rows.append({"matrix": name, "source": source, "shape": list(q.shape), "bits": p,
                         "relative_error": relative_error(cache[source], bcq.dequantize(p))})
    doc = {"file": str(args.file), "against": str(args.against), "errors": rows}
    text = table(["matrix", "shape", "bits", "rel. error"],
                 [[r["matrix"], _shape(r["shape"]), r["bits"], f"{r['relative_error']:.6f}"] for r in rows])
    _emit(args, doc, text)
    return 0


# ------------------------------------------------------------------------------ parser

def add_parser(subparsers) -> None:
    q = subparsers.add_parser("quantize", help="quantize .npy/.safetensors weights to a packed BCQ model file",
                              description="Quantize every 2-D float matrix of IN and write a packed multi-precision "
                                          "BCQ model file (docs/cli.md).")
    q.add_argument("input", metavar="IN", help=".npy (one matrix, named by the file stem) or .safetensors")
    q.add_argument("-o", "--output", metavar="OUT", required=True, help="model file to write (.safetensors)")
    q.add_argument("--bits", metavar="BITS", default="2,3,4", help="consecutive precisions, e.g. 2,3,4 (default)")
    q.add_argument("--group-size", metavar="G", default=128, help="g, a multiple of 32 dividing K (default 128)")
    q.add_argument("--iters", metavar="T", default=20, help="refinement rounds T (default 20)")
    q.add_argument("--method", metavar="{" + ",".join(METHODS) + "}", default="progressive",
                   help="progressive (AnyBCQ, default), joint (shared planes, all precisions at once) or "
                        "fixed (each precision its own model, stored as NAME@Pbit)")
    q.add_argument("--asymmetric", action="store_true", help="add a per-group offset beta")
    q.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    q.set_defaults(func=cmd_quantize)

    i = subparsers.add_parser("info", help="shapes, precisions and memory breakdown of a model file")
    i.add_argument("file", metavar="FILE", help="model file written by bcq quantize")
    i.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    i.set_defaults(func=cmd_info)

    e = subparsers.add_parser("error", help="relative Frobenius error per matrix and precision")
    e.add_argument("file", metavar="FILE", help="model file written by bcq quantize")
    e.add_argument("--against", metavar="IN", required=True, help="the original weights (.npy or .safetensors)")
    e.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    e.set_defaults(func=cmd_error)

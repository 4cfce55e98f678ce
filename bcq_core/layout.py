r"""The packed multi-precision BCQ layout: what every index and bit means.

    planes  uint32  [P, N, K/32]   plane-major, then output row, then 32-input word
    alpha   {p: float16 [p, N, G]} one scale set per stored precision p
    beta    {p: float16 [N, G]}    optional per-group offsets (asymmetric BCQ)

Bit t (t = 0 is the least significant) of word ``planes[i, n, w]`` is plane i of weight
``W[n, 32 w + t]``; a set bit means +1, a clear bit -1.  Words are little-endian on disk.

Why this order (docs/format.md has the long version):

* A p-bit request reads ``planes[:p]``: the first p * N * K/32 words, one contiguous range.
  Planes above p are never touched, and switching precision is a pointer and a loop count.
* Within a plane, one row's words are contiguous along K, so a warp of 32 threads reading
  32 consecutive words of a row issues one fully used 128-byte transaction.
* A byte of a word is 8 consecutive inputs, which is exactly the index a LUT-GEMM table of
  mu = 8 activations wants: no bit transpose, no centroid table.

``tile_planes`` / ``untile_planes`` convert to and from the tile layout the tensor-core kernels
(1-bit and int8) read in GPU memory (one warp's step of one plane per 512 contiguous bytes; docs/format.md).

The official AnyBCQ checkpoints use ``qweight int32 [K/32, P, N]`` (same bit convention) and
``alpha float16 [K/g, p, N]``; ``from_official`` / ``to_official`` convert exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bcq import BCQ
from .checks import check_precision

WORD_BITS = 32


def pack_bits(signs: np.ndarray) -> np.ndarray:
    """+-1 (or bool, True = +1) array [..., K] -> uint32 [..., K/32], bit t = element 32w + t."""
    if signs.shape[-1] % WORD_BITS:
        raise ValueError(f"signs: last axis must be a multiple of 32, got {signs.shape[-1]}")
    bits = np.packbits(signs > 0, axis=-1, bitorder="little")  # [..., K/8], byte j = inputs 8j..8j+7
    return np.ascontiguousarray(bits).view("<u4").astype(np.uint32, copy=False)


def unpack_bits(words: np.ndarray, dtype=np.int8) -> np.ndarray:
    """uint32 [..., K/32] -> +-1 array [..., K] (inverse of pack_bits)."""
    words = np.ascontiguousarray(words, dtype="<u4")
    bits = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")
    return (bits.astype(dtype) * 2 - 1).astype(dtype, copy=False)


# --- the tile layout of the tensor-core kernels (gpu/bmma_gemv.cu, gpu/imma_gemm.cu) --------------
TILE_ROWS = 16    # rows of one mma.m16n8k256: a warp's rows
TILE_WORDS = 8    # plane words of one 256-input step
TILE_SIZE = TILE_ROWS * TILE_WORDS  # 128 words = 512 bytes: one warp's step of one plane
# tile_planes is a reshape and a transpose (untile_planes the inverse; llm.bcq_linear does the same on torch
# tensors): the zero-padded planes [p, NT*16, KS*8] seen as rows_view (i, nt, h, gid, s, t, e) go by TILE_AXES to
# tiles_view (i, nt, s, e, gid, t, h), which is [p, NT, KS, 128]; UNTILE_AXES goes back.
TILE_AXES = (0, 1, 4, 6, 3, 5, 2)
UNTILE_AXES = (0, 1, 6, 4, 2, 5, 3)


def rows_view(p: int, NT: int, KS: int) -> tuple:
    """Padded planes [p, 16 NT, 8 KS] as (i, nt, h, gid, s, t, e): row 16 nt + 8 h + gid, word 8 s + 2 t + e."""
    return p, NT, 2, 8, KS, 4, 2


def tiles_view(p: int, NT: int, KS: int) -> tuple:
    """Tiles [p, NT, KS, 128] as (i, nt, s, e, gid, t, h): word 64 e + 8 gid + 2 t + h of tile (nt, s)."""
    return p, NT, KS, 2, 8, 4, 2


def tile_shape(p: int, N: int, KW: int) -> tuple[int, int, int, int]:
    """Shape of tile_planes' result for planes [p, N, KW]: (p, ceil(N / 16), ceil(KW / 8), 128)."""
    return p, -(-N // TILE_ROWS), -(-KW // TILE_WORDS), TILE_SIZE


def _array_module(a):
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return np


def tile_planes(planes):
    r"""Planes uint32 [p, N, K/32] -> the same words in the tile layout, uint32 [p, NT, KS, 128].

        tiles[i, nt, s, 64 e + 8 gid + 2 t + h] = planes[i, 16 nt + 8 h + gid, 8 s + 2 t + e]
        gid in 0..7, t in 0..3, e, h in 0..1;  NT = ceil(N / 16), KS = ceil(K / 256), zero-padded

    A tile is one warp's step of one plane in gpu/bmma_gemv.cu: 16 rows x 256 inputs, 512 contiguous
    bytes.  Lane l = 4 gid + t holds the A fragment of mma.m16n8k256 for rows gid and gid + 8, words
    2t and 2t + 1: its 8 bytes at 8 l in the first half (words 2t) and at 256 + 8 l in the second
    (words 2t + 1), so a warp fetches a step with two 8-byte loads per lane, each reading 256
    contiguous bytes, where the row-major layout reads 8 rows x 32 bytes from 8 cache lines per load.
    The int8 kernel (gpu/imma_gemm.cu) copies half a tile per 128-input step.  Plane-major like the packed
    layout, so a p-bit request still reads ``tiles[:p]``, one contiguous range.  Works on NumPy and CuPy
    arrays.
    """
    xp = _array_module(planes)
    if getattr(planes, "dtype", None) != np.uint32 or planes.ndim != 3:
        raise ValueError(f"planes: must be uint32 [p, N, K/32], got {getattr(planes, 'dtype', None)} "
                         f"{tuple(getattr(planes, 'shape', ()))}")
    p, N, KW = planes.shape
    _, NT, KS, _ = tile_shape(p, N, KW)
    padded = xp.zeros((p, NT * TILE_ROWS, KS * TILE_WORDS), dtype=xp.uint32)
    padded[:, :N, :KW] = planes
    t = padded.reshape(rows_view(p, NT, KS)).transpose(TILE_AXES)
    return xp.ascontiguousarray(t).reshape(p, NT, KS, TILE_SIZE)


def untile_planes(tiles, N: int, KW: int):
    """Inverse of tile_planes: uint32 [p, NT, KS, 128] -> [p, N, KW] (the padding dropped)."""
    xp = _array_module(tiles)
    if tiles.dtype != np.uint32 or tiles.ndim != 4 or tuple(tiles.shape[1:]) != tile_shape(1, N, KW)[1:]:
        raise ValueError(f"tiles: must be uint32 {tile_shape(tiles.shape[0] if tiles.ndim else 0, N, KW)} for "
                         f"N={N}, K/32={KW}, got {tiles.dtype} {tuple(tiles.shape)}")
    p, NT, KS, _ = tiles.shape
    t = tiles.reshape(tiles_view(p, NT, KS)).transpose(UNTILE_AXES)
    return xp.ascontiguousarray(t.reshape(p, NT * TILE_ROWS, KS * TILE_WORDS)[:, :N, :KW])


@dataclass
class PackedBCQ:
    """One weight matrix in the packed layout (see the module docstring)."""

    planes: np.ndarray
    alpha: dict[int, np.ndarray]
    group_size: int
    beta: dict[int, np.ndarray] | None = None
    source_dtype: str = "float32"

    def __post_init__(self):
        validate_packed(self)

    @property
    def shape(self) -> tuple[int, int]:
        P, N, KW = self.planes.shape
        return N, KW * WORD_BITS

    @property
    def num_planes(self) -> int:
        return self.planes.shape[0]

    @property
    def precisions(self) -> tuple[int, ...]:
        return tuple(sorted(self.alpha))

    def arrays_for(self, p: int):
        """(planes[:p], alpha_p, beta_p or None): everything a p-bit kernel call reads."""
        check_precision("p", p, self.alpha)
        beta = None if self.beta is None else self.beta[p]
        return self.planes[:p], self.alpha[p], beta


def validate_packed(q: PackedBCQ) -> None:
    """Every dtype, shape and count must agree; raises ValueError naming the field."""
    if not isinstance(q.planes, np.ndarray) or q.planes.dtype != np.uint32 or q.planes.ndim != 3:
        raise ValueError(f"planes: must be uint32 [P, N, K/32], got {getattr(q.planes, 'dtype', None)} "
                         f"{getattr(q.planes, 'shape', None)}")
    P, N, KW = q.planes.shape
    K, g = KW * WORD_BITS, q.group_size
    if P < 1 or N < 1 or KW < 1:
        raise ValueError(f"planes: every dimension must be positive, got {q.planes.shape}")
    if not isinstance(g, (int, np.integer)) or g <= 0 or g % WORD_BITS or K % g:
        raise ValueError(f"group_size: must be a positive multiple of 32 dividing K={K}, got {g}")
    if not isinstance(q.alpha, dict) or not q.alpha:
        raise ValueError("alpha: must be a non-empty dict {precision: float16 [p, N, G]}")
    if q.beta is not None and not isinstance(q.beta, dict):
        raise ValueError("beta: must be None or a dict {precision: float16 [N, G]}")
    for name, d in (("alpha", q.alpha), ("beta", q.beta or {})):
        for p, a in d.items():
            if not isinstance(p, (int, np.integer)) or isinstance(p, bool):
                raise ValueError(f"{name}: precision keys must be ints, got {p!r}")
            if not isinstance(a, np.ndarray):
                raise ValueError(f"{name}[{p}]: must be a NumPy array, got {type(a).__name__}")
    for p, a in q.alpha.items():
        if not 1 <= p <= P:
            raise ValueError(f"alpha: precision {p} needs {p} planes, only {P} stored")
        if a.dtype != np.float16 or a.shape != (p, N, K // g):
            raise ValueError(f"alpha[{p}]: must be float16 {(p, N, K // g)}, got {a.dtype} {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"alpha[{p}]: must be finite")
    if q.beta is not None:
        if set(q.beta) != set(q.alpha):
            raise ValueError(f"beta: precisions {sorted(q.beta)} must match alpha's {sorted(q.alpha)}")
        for p, b in q.beta.items():
            if b.dtype != np.float16 or b.shape != (N, K // g):
                raise ValueError(f"beta[{p}]: must be float16 {(N, K // g)}, got {b.dtype} {b.shape}")
            if not np.isfinite(b).all():
                raise ValueError(f"beta[{p}]: must be finite")


def pack(bcq: BCQ, source_dtype: str = "float32") -> PackedBCQ:
    """BCQ (int8 signs, float32 scales) -> PackedBCQ (uint32 planes, float16 scales)."""
    beta = None if bcq.beta is None else {p: b.astype(np.float16) for p, b in bcq.beta.items()}
    return PackedBCQ(planes=pack_bits(bcq.signs), alpha={p: a.astype(np.float16) for p, a in bcq.alpha.items()},
                     group_size=bcq.group_size, beta=beta, source_dtype=source_dtype)


def unpack(q: PackedBCQ) -> BCQ:
    """PackedBCQ -> BCQ with the float16 scales widened exactly to float32."""
    beta = None if q.beta is None else {p: b.astype(np.float32) for p, b in q.beta.items()}
    return BCQ(signs=unpack_bits(q.planes), alpha={p: a.astype(np.float32) for p, a in q.alpha.items()},
               group_size=q.group_size, beta=beta)


def to_official(q: PackedBCQ) -> dict[str, np.ndarray]:
    """Tensors in the official AnyBCQ layout: qweight int32 [K/32, P, N], alpha_p [G, p, N], beta_p [G, N]."""
    out = {"qweight": np.ascontiguousarray(q.planes.transpose(2, 0, 1)).view(np.int32)}
    for p, a in q.alpha.items():
        out[f"alpha_{p}"] = np.ascontiguousarray(a.transpose(2, 0, 1))
        if q.beta is not None:
            out[f"beta_{p}"] = np.ascontiguousarray(q.beta[p].T)
    return out


def from_official(tensors: dict[str, np.ndarray], group_size: int) -> PackedBCQ:
    """Inverse of ``to_official``; validates shapes on the way in."""
    if "qweight" not in tensors:
        raise ValueError("tensors: missing 'qweight' (int32 [K/32, P, N])")
    qw = np.asarray(tensors["qweight"])
    if qw.dtype != np.int32 or qw.ndim != 3:
        raise ValueError(f"qweight: must be int32 [K/32, P, N], got {qw.dtype} {qw.shape}")
    planes = np.ascontiguousarray(qw.view(np.uint32).transpose(1, 2, 0))
    alpha, beta = {}, {}
    for name, t in tensors.items():
        if name.startswith("alpha_"):
            alpha[int(name[6:])] = np.ascontiguousarray(np.asarray(t).transpose(1, 2, 0))
        elif name.startswith("beta_"):
            beta[int(name[5:])] = np.ascontiguousarray(np.asarray(t).T)
    return PackedBCQ(planes=planes, alpha=alpha, group_size=group_size, beta=beta or None)

"""CuPy wrappers for the CUDA kernels in this folder.

    lut_gemv(x, planes, alpha, beta=None, *, group_size)   y = x W_hat^T, batch M <= 32, LUT-GEMM
    mma_gemm(x, planes, alpha, beta=None, *, group_size)   y = x W_hat^T, batch M <= 16, exact tensor cores
    bmma_gemv(x, tiles, alpha, beta=None, *, group_size)   the same bytes from 1-bit tensor cores (small batches)
    imma_gemm(x, tiles, alpha, beta=None, *, group_size)   the same bytes from int8 tensor cores, M <= 16, p <= 4
    tile_planes(planes)                                    the planes in the tensor-core kernels' tile layout
    dequantize(planes, alpha, beta=None, *, group_size, tiles=None)      W_hat float16 [N, K], from either layout
    bcq_matmul(x, planes, alpha, beta=None, *, group_size, tiles=None)   any batch: the fastest measured path

Arguments (CuPy arrays, or torch CUDA tensors through DLPack; results come back as the same kind):
    x       float16 [M, K], C-contiguous
    planes  uint32  [p, N, K/32], C-contiguous: the first p planes of a PackedBCQ (``planes[:p]``)
    tiles   uint32  [p, ceil(N/16), ceil(K/256), 128]: the same planes in the tile layout (tile_planes),
            which both tensor-core kernels read; made once per weight, it can replace the row-major planes
            (bcq_matmul and dequantize take either; the LUT and fp16 tensor-core kernels, for p > 4, read planes)
    alpha   float16 [p, N, G]: the scale set of precision p
    beta    float16 [N, G] or None: offsets of precision p
    group_size  g, a multiple of 32 that divides K
Every argument is checked before launch (reference.checks), with the same rules as reference/.
Kernels run on the current CuPy stream (the current torch stream for torch tensors), never
synchronise the host, use no float atomics, and can be captured in a CUDA graph.  On sm_90 the
1-bit kernel starts while its activation encoder still runs (gpu/launch.py).

Compiled instantiations (``cupy.RawModule(name_expressions=...)``): ``bcq::lut_gemv<Mp>`` for the
batch buckets Mp = 1, 2, 4, 8, 16, 32, the tensor-core kernels' variants (``_module`` lists them) and
``bcq::dequantize<FROM, TO>`` for the plane ranges of DEQUANTIZE_PLANE_RANGES.  NVRTC compiles them on first use;
CuPy caches the binaries on disk.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from bcq_core import layout
from bcq_core.layout import TILE_ROWS, tile_shape
from reference.checks import MAX_LUT_BATCH, check_gemv_args
from reference import exact_mma
from reference.exact_mma import MAX_GROUP, MAX_MMA_BATCH
from reference.lut_gemv import SPLIT_WORDS, batch_bucket

from .divide import MAX_DIVIDEND, magic_divisor
from .launch import launch

HERE = Path(__file__).parent
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
THREADS = 512
WARPS = THREADS // 32
ROW_CHUNK = 16
ACC_FLOATS = 8192
# sizeof(SharedStorage) in lut_gemv.cu: tables + lane-partial buffer + split partials
SMEM_BYTES = 4 * 256 * 32 * 4 + WARPS * ROW_CHUNK * 33 * 4 + ACC_FLOATS * 4
MAX_ROWS_PER_BLOCK = 1024
# The arithmetic contract: IEEE single with subnormals, no FMA contraction (the kernels also use
# explicit __fadd_rn/__fmul_rn); pinned here so a compiler default can never change a bit.
NVRTC_OPTIONS = ("-std=c++17", "--ftz=false", "--fmad=false", "--prec-div=true", "--prec-sqrt=true")


def _cupy():
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise RuntimeError("gpu/: CuPy is not installed (pip install 'bcq-workbench[gpu]')") from e
    return cupy


@functools.lru_cache(maxsize=None)
def _module(device_id: int, name: str, split: int = exact_mma.SPLIT_CHOICES[0]):
    cupy = _cupy()
    # Local headers are pasted in rather than found through -I, so that CuPy's on-disk cache,
    # keyed by the source text, sees a change to a header too.
    code = (HERE / f"{name}.cu").read_text()
    for header in HERE.glob("*.cuh"):
        code = code.replace(f'#include "{header.name}"', header.read_text())
    names = {"lut_gemv": [f"bcq::lut_gemv<{m}>" for m in BATCH_BUCKETS],
             "mma_gemm": ["bcq::encode_activations", "bcq::mma_gemm<1>", "bcq::mma_gemm<2>"],
             "bmma_gemv": ["bcq::encode_bits"] + [f"bcq::bmma_gemv<{s}, {m}, {q}, {r}>" for s, m, q, r in
                                                  bmma_variants()],
             "imma_gemm": ["bcq::encode_digits"] + [f"bcq::imma_gemm<{p}, {m}, {t}>" for p, m, t in IMMA_INSTANCES],
             "dequantize": [f"bcq::dequantize<{a}, {b}>" for a, b in DEQUANTIZE_PLANE_RANGES]}[name]
    # the exact kernels' split (reference/exact_mma.py: contract_split) is a compile-time constant:
    # one module per split length in use (a model has a few layer shapes), so it costs their loops no register
    options = NVRTC_OPTIONS + (f"-DBCQ_EXACT_SPLIT_INPUTS={split}",)
    return cupy.RawModule(code=code, options=options, name_expressions=names)


@functools.lru_cache(maxsize=None)
def _lut_kernel(device_id: int, Mp: int):
    optin = _cupy().cuda.Device(device_id).attributes["MaxSharedMemoryPerBlockOptin"]
    if optin < SMEM_BYTES:
        raise RuntimeError(f"gpu/: lut_gemv needs {SMEM_BYTES} bytes of shared memory per block, this GPU "
                           f"offers {optin} (Hopper: 232448); use bcq_matmul's dequantize path instead")
    kernel = _module(device_id, "lut_gemv").get_function(f"bcq::lut_gemv<{Mp}>")
    kernel.max_dynamic_shared_size_bytes = SMEM_BYTES
    return kernel


@functools.lru_cache(maxsize=None)
def _sm_count(device_id: int) -> int:
    return _cupy().cuda.Device(device_id).attributes["MultiProcessorCount"]


# Split-K scratch, one per (device, stream): launches on one stream are ordered, so they can
# share it; the counters reset themselves at the end of every launch (graph replays too).
_scratch: dict = {}


def _workspace(device_id: int, stream_ptr: int, n_floats: int, n_counters: int):
    cupy = _cupy()
    key = (device_id, stream_ptr)
    ws, ctr = _scratch.get(key, (None, None))
    if ws is None or ws.size < n_floats:
        ws = cupy.empty(max(n_floats, 1), dtype=cupy.float32)
    if ctr is None or ctr.size < n_counters:
        ctr = cupy.zeros(max(n_counters, 1), dtype=cupy.uint32)
    _scratch[key] = (ws, ctr)
    return ws, ctr


def launch_geometry(M: int, N: int, K: int, num_sms: int) -> tuple[int, int, int]:
    """(num_splits, rows_per_block, num_row_tiles) for one call.

    Splits are fixed by the contract (8192 inputs each); the rows per block are chosen so that
    splits x row tiles fills the GPU in one wave (at most num_sms blocks of one block per SM, unless
    rows_max forces more).  Rows never interact, so this choice does not change a single output bit.
    """
    Mp = batch_bucket(M)
    W = 32 // Mp
    num_tiles = -(-(K // 32) // W)
    num_splits = -(-num_tiles // (SPLIT_WORDS // W))
    rows_max = min(MAX_ROWS_PER_BLOCK, ACC_FLOATS // Mp)
    rows = -(-N // max(1, num_sms // num_splits))  # row tiles per split <= num_sms // num_splits
    rows = min(max(WARPS, -(-rows // WARPS) * WARPS), rows_max)
    return num_splits, rows, -(-N // rows)


def _as_cupy(a, name):
    """(cupy array, was_torch) for a CuPy array or a torch CUDA tensor; None passes through."""
    if a is None:
        return None, False
    cupy = _cupy()
    if isinstance(a, cupy.ndarray):
        return a, False
    if type(a).__module__.startswith("torch"):
        if not a.is_cuda:
            raise ValueError(f"{name}: torch tensor must be on a CUDA device, got {a.device}")
        # handed over on torch's current stream, so DLPack needs no cross-stream wait (which a
        # stream being captured into a CUDA graph would refuse)
        with _torch_stream_scope(True):
            return cupy.from_dlpack(a), True
    raise TypeError(f"{name}: must be a CuPy array or a torch CUDA tensor, got {type(a).__name__}")


def _check_device_arrays(**arrays):
    cupy = _cupy()
    dev = cupy.cuda.Device().id
    for name, a in arrays.items():
        if a is None:
            continue
        if not a.flags.c_contiguous:
            raise ValueError(f"{name}: must be C-contiguous")
        if a.device.id != dev:
            raise ValueError(f"{name}: is on device {a.device.id}, the current device is {dev}")
    return dev


def torch_stream():
    """torch's current CUDA stream as a CuPy stream (``with gpu.torch_stream(): ...`` launches on it)."""
    import torch
    cupy, stream = _cupy(), torch.cuda.current_stream()
    try:  # CuPy >= 14 speaks the CUDA stream protocol that torch streams implement
        return cupy.cuda.Stream.from_external(stream)
    except (AttributeError, TypeError):
        return cupy.cuda.ExternalStream(stream.cuda_stream)


def _torch_stream_scope(used_torch: bool):
    return torch_stream() if used_torch else _cupy().cuda.get_current_stream()


def _null_or(a):
    return a if a is not None else np.uint64(0)


def _gemm_call(x, planes, alpha, beta, group_size, out, max_batch, name, planes_name="planes"):
    """Everything a GEMM wrapper does before its launch: convert, validate, pick the stream, make out.

    Returns (x, planes, alpha, beta, (M, N, K, p, G), device id, stream, out, was_torch).  With
    planes_name="tiles" the planes come in the tile layout (bcq_core.layout.tile_planes), checked
    against the shape that alpha and group_size imply.
    """
    (x, tx), (planes, _), (alpha, _), (beta, _) = (_as_cupy(x, "x"), _as_cupy(planes, planes_name),
                                                   _as_cupy(alpha, "alpha"), _as_cupy(beta, "beta"))
    planes_shape = _tiled_planes_shape(planes, alpha, group_size) if planes_name == "tiles" else planes.shape
    dims = check_gemv_args(x.shape, x.dtype, planes_shape, planes.dtype, alpha.shape, alpha.dtype,
                           None if beta is None else beta.shape, None if beta is None else beta.dtype, group_size)
    if planes_name == "tiles":
        _check_tiles(planes, dims[3], dims[1], dims[2])
    if dims[0] > max_batch:
        raise ValueError(f"x: {name} takes batch 1..{max_batch}, got M={dims[0]}; use bcq_matmul")
    dev = _check_device_arrays(x=x, alpha=alpha, beta=beta, **{planes_name: planes})
    cupy = _cupy()
    stream = _torch_stream_scope(tx)
    M, N = dims[0], dims[1]
    with stream:
        if out is None:
            out = cupy.empty((M, N), dtype=cupy.float16)
        elif out.shape != (M, N) or out.dtype != cupy.float16 or not out.flags.c_contiguous:
            raise ValueError(f"out: must be a C-contiguous float16 {(M, N)} array")
    return x, planes, alpha, beta, dims, dev, stream, out, tx


def _tiled_planes_shape(tiles, alpha, group_size: int) -> tuple:
    """The row-major planes' shape [p, N, G g / 32] that tiles stand for, from alpha and g, for
    check_gemv_args; the tiles' dtype is checked here, so that an error names them, their shape by
    _check_tiles once those dimensions are known to be valid."""
    if str(tiles.dtype) != "uint32":
        raise ValueError(f"tiles: must be uint32 (the planes in the tile layout, gpu.tile_planes), got "
                         f"{tiles.dtype} {tuple(tiles.shape)}")
    p, N, G = alpha.shape if alpha.ndim == 3 else (0, 0, 0)
    return p, N, G * group_size // 32


def _check_tiles(tiles, p: int, N: int, K: int) -> None:
    """tiles must be p planes of N x K weights in the tile layout (_tiled_planes_shape has checked the dtype)."""
    want = tile_shape(p, N, K // 32)
    if tuple(tiles.shape) != want:
        raise ValueError(f"tiles: must be the planes in the tile layout, uint32 {want} for p, N, K = {p}, {N}, {K} "
                         f"(gpu.tile_planes(planes[:p])); got {tiles.dtype} {tuple(tiles.shape)}")


def lut_gemv(x, planes, alpha, beta=None, *, group_size: int, out=None):
    """y = x W_hat^T (float16 [M, N]) with the LUT-GEMM kernel; bit-exact with reference.lut_gemv."""
    x, planes, alpha, beta, (M, N, K, p, G), dev, stream, out, tx = _gemm_call(
        x, planes, alpha, beta, group_size, out, MAX_LUT_BATCH, "lut_gemv")
    with stream:
        num_splits, rows, row_tiles = launch_geometry(M, N, K, _sm_count(dev))
        ws, ctr = _workspace(dev, stream.ptr, num_splits * M * N if num_splits > 1 else 0, row_tiles)
        kernel = _lut_kernel(dev, batch_bucket(M))
        kernel((num_splits, row_tiles), (THREADS,),
               (x, planes, alpha, _null_or(beta), out, ws, ctr,
                np.int32(M), np.int32(N), np.int32(K), np.int32(p), np.int32(group_size), np.int32(rows)),
               shared_mem=SMEM_BYTES)
    return _back(out, tx)


EXACT_ROWS_PER_BLOCK = 64  # 4 warps x 16 rows (mma_gemm.cu, bmma_gemv.cu, imma_gemm.cu)
# bmma_gemv.cu: (groups per 256-input step S = 256 / g, batch bucket Mp) with S * Mp <= 8; p <= 4
BMMA_INSTANCES = tuple((s, m) for s in (1, 2, 4, 8) for m in (1, 2, 4, 8) if s * m <= 8)
BMMA_PARTS = (1, 2)      # warps per 16-row tile and split (bmma_gemv.cu: BmmaLater)
BMMA_PARTS_UP_TO_PLANES = 3
BMMA_TWO_TILES_UP_TO_PLANES = 2  # bmma_gemv<..., RT = 2> holds at most 2 planes' words (bmma_gemv.cu)
BMMA_TWO_TILES_EVERYWHERE_UP_TO_PLANES = 1  # calls this thin take two tiles per warp on every layer
BMMA_WARP_SLOTS = 16     # warps per SM of the variants with S * Mp <= 2 (4 blocks of 4, by registers)
BMMA_MAX_PLANES = 4
BMMA_STEP = 256
BMMA_STEP_FRAG = 32 * 2 * 2  # uint32 of B fragments per batch row and step: [32 lanes, 2 mma, 2] (16 bit-planes)


def bmma_supports(M: int, p: int, group_size: int) -> bool:
    """Whether bmma_gemv takes this call: g divides 256, bucket(M) * 256 / g <= 8, p <= 4."""
    return (group_size <= BMMA_STEP and BMMA_STEP % group_size == 0 and 1 <= p <= BMMA_MAX_PLANES
            and 1 <= M <= MAX_MMA_BATCH and batch_bucket(M) * (BMMA_STEP // group_size) <= 8)


def bmma_parts_choices(S: int, Mp: int) -> tuple[int, ...]:
    """The parts bmma_gemv<S, Mp, parts> is compiled for: 1 and 2 for the small variants (S * Mp <= 2,
    the ones 4 blocks fit per SM), 1 for the others (their registers allow only 2 blocks)."""
    return BMMA_PARTS if S * Mp <= 2 else (1,)


def bmma_variants() -> list[tuple[int, int, int, int]]:
    """(S, Mp, parts, tiles per warp) of every bmma_gemv instantiation the module compiles."""
    return [(s, m, q, r) for s, m in BMMA_INSTANCES for q in bmma_parts_choices(s, m)
            for r in bmma_tiles_choices(s, m)]


def bmma_tiles_choices(S: int, Mp: int, p: int | None = None) -> tuple[int, ...]:
    """The 16-row tiles per warp bmma_gemv<S, Mp, parts, RT> is compiled for, with either parts: 1 and 2 at
    batch 1 (g = 128 and 256), 1 for the others (at batch 2 and g = 256 two tiles spill).  Given p, the
    ones a p-plane call may take: two tiles hold at most BMMA_TWO_TILES_UP_TO_PLANES planes' words."""
    two = Mp == 1 and S <= 2 and (p is None or p <= BMMA_TWO_TILES_UP_TO_PLANES)
    return (1, 2) if two else (1,)


def _bmma_thin(S: int, Mp: int, p: int) -> bool:
    """Whether a call takes two tiles per warp on every layer: few enough planes, and compiled for it."""
    return p <= BMMA_TWO_TILES_EVERYWHERE_UP_TO_PLANES and 2 in bmma_tiles_choices(S, Mp, p)


def _bmma_pairs(N: int, K: int, group_size: int, split: int) -> int:
    """The (16-row tile, split) pairs of a bmma_gemv call, ceil(N / 16) x splits: one warp each with one
    part and one tile per warp.  Both choices below weigh them against the GPU's warp slots."""
    return -(-N // 16) * _num_splits(K // group_size, group_size, split)


def bmma_tiles_per_warp(M: int, N: int, K: int, group_size: int, p: int, split: int, num_sms: int) -> int:
    """16-row tiles per warp for one bmma_gemv call, where a variant is compiled for 2 (batch 1, g = 128 or
    256): 2 for a 1-plane call on every layer, and for a 2-plane call where the (16-row tile, split) pairs,
    ceil(N / 16) x splits, outnumber the GPU's warp slots (num_sms x 16), so that one warp per pair would
    take more than one wave; else 1.

    Two tiles per warp walk their steps side by side (two independent chains sharing the activation
    fragments) in half the warps.  On the H200 at batch 1 (docs/kernel_experiments.md, "Two tiles per
    warp", and benchmarks/results/h200/bmma_parts_h200.md) that was faster at 1 bit on every layer (with 2
    parts where one wave holds the pairs: ``bmma_parts``), at 2 bits only on the layers of more pairs than
    slots, and slower at 3 and 4 bits.  It never changes a bit (each row keeps the contract's order).
    split: the contract's, equalized (reference.exact_mma.contract_split).
    """
    S, Mp = BMMA_STEP // group_size, batch_bucket(M)
    if 2 not in bmma_tiles_choices(S, Mp, p):
        return 1
    wide = _bmma_thin(S, Mp, p) or _bmma_pairs(N, K, group_size, split) > num_sms * BMMA_WARP_SLOTS
    return 2 if wide else 1


def bmma_parts(M: int, N: int, K: int, group_size: int, p: int, split: int, num_sms: int) -> int:
    """Warps per 16-row tile and split for one bmma_gemv call: 2 where the call has at most 3 planes
    and twice its (16-row tile, split) pairs, 2 ceil(N / 16) x splits, still fit the GPU's warp slots at
    once (num_sms x 16); for a 1-plane call that takes two tiles per warp (``bmma_tiles_per_warp``), where
    the pairs themselves fit them (two parts of two tiles: as many warps as pairs); else 1.

    With one warp per pair such a layer leaves SMs half empty, each warp walking its split's steps one
    after the other; 2 parts halve the chains (on the H200, benchmarks/results/h200/bmma_parts_h200.md:
    1.04-1.21x at 2 and 3 bits on 8B o, 8B down and 70B o; 2 parts at 4 bits slower or the same; at 1 bit,
    two parts of two tiles 1.07-1.33x one warp per pair where the pairs fit one wave).  It never changes a
    bit (bmma_gemv.cu keeps the contract's order).
    split: the contract's, equalized (reference.exact_mma.contract_split).
    """
    S, Mp = BMMA_STEP // group_size, batch_bucket(M)
    pairs, slots = _bmma_pairs(N, K, group_size, split), num_sms * BMMA_WARP_SLOTS
    if 2 not in bmma_parts_choices(S, Mp):
        return 1
    if _bmma_thin(S, Mp, p):
        return 2 if pairs <= slots else 1
    return 2 if p <= BMMA_PARTS_UP_TO_PLANES and pairs * 2 <= slots else 1


# the kernels that read the planes in the tile layout (the others read them row-major)
TILED_KERNELS = ("bmma_gemv", "imma_gemm")


def tile_planes(planes):
    """Planes uint32 [p, N, K/32] -> the tile layout bmma_gemv and imma_gemm read, uint32 [p, ceil(N/16), ceil(K/256), 128].

    bcq_core.layout.tile_planes on the GPU (a CuPy array or a torch CUDA tensor in, the same kind
    out), on the current stream.  Do it once per weight: it is a full copy of the planes (which a
    caller serving only p <= 4 can then drop: bcq_matmul and dequantize take the tiles alone).
    """
    (a, tp) = _as_cupy(planes, "planes")
    with _torch_stream_scope(tp):  # layout.tile_planes checks the dtype and shape
        tiles = layout.tile_planes(a)
    return _back(tiles, tp)


def bmma_gemv(x, tiles, alpha, beta=None, *, group_size: int, out=None, split: int | None = None,
              parts: int | None = None, tiles_per_warp: int | None = None):
    """y = x W_hat^T (float16 [M, N]) on 1-bit tensor cores; bit-exact with reference.exact_mma_gemm.

    tiles: the p planes in the tile layout, uint32 [p, ceil(N/16), ceil(K/256), 128]
    (``tile_planes(planes[:p])``, or ``tile_planes(planes)[:p]``: the layout is plane-major too).
    The plane words feed mma.m16n8k256 (.b1, AND + popcount) as stored; the activations go in as
    their 16 fixed-point bit-planes (bcq::encode_bits, one small launch).  Takes g in {32, 64, 128,
    256}, p <= 4 and batch up to 8 * g / 256 (rounded up to a power of two): 4 at g = 128.
    split: a nominal split of the contract (equalized by reference.exact_mma.contract_split); None = its choice.
    parts: warps sharing each 16-row tile's split (``bmma_parts``' choice when None); the bytes are the
    same for every choice.
    tiles_per_warp: 16-row tiles each warp walks side by side (``bmma_tiles_per_warp``' choice when None;
    2 takes at most 2 planes); the bytes are the same for every choice.
    """
    exact_mma.check_split(split)
    x, tiles, alpha, beta, (M, N, K, p, G), dev, stream, out, tx = _gemm_call(
        x, tiles, alpha, beta, group_size, out, MAX_MMA_BATCH, "bmma_gemv", planes_name="tiles")
    if not bmma_supports(M, p, group_size):
        raise ValueError(f"bmma_gemv: takes a group size dividing 256, at most {BMMA_MAX_PLANES} planes and "
                         f"batch bucket x 256/g <= 8; got g={group_size}, p={p}, M={M} (use bcq_matmul)")
    if p * N * G >= 2 ** 31 or tiles.size >= 2 ** 31:  # the kernel's offsets are 32-bit (fewer registers)
        raise ValueError(f"alpha: bmma_gemv addresses scales and tiles with 32-bit offsets: p N G and the tiles' "
                         f"words must stay below 2^31; got p N G = {p * N * G}, {tiles.size} words")
    S, Mp = BMMA_STEP // group_size, batch_bucket(M)
    eq_split = exact_mma.contract_split(N, K, group_size, split)
    if parts is None:
        parts = bmma_parts(M, N, K, group_size, p, eq_split, _sm_count(dev))
    elif parts not in bmma_parts_choices(S, Mp):
        raise ValueError(f"parts: bmma_gemv takes {bmma_parts_choices(S, Mp)} at g={group_size}, batch bucket {Mp}; "
                         f"got {parts}")
    if tiles_per_warp is None:
        tiles_per_warp = bmma_tiles_per_warp(M, N, K, group_size, p, eq_split, _sm_count(dev))
    elif tiles_per_warp not in bmma_tiles_choices(S, Mp, p):
        raise ValueError(f"tiles_per_warp: bmma_gemv takes {bmma_tiles_choices(S, Mp)} at g={group_size}, "
                         f"batch bucket {Mp}, and 2 only up to {BMMA_TWO_TILES_UP_TO_PLANES} planes; "
                         f"got {tiles_per_warp} with p={p}")
    with stream:
        KS = -(-K // BMMA_STEP)
        n_words = M * KS * 8  # one warp each
        _launch_exact(dev, stream, "bmma_gemv", "bcq::encode_bits", -(-n_words // 4), M * KS * BMMA_STEP_FRAG,
                      f"bcq::bmma_gemv<{S}, {Mp}, {parts}, {tiles_per_warp}>", x, tiles, alpha, beta, out, M, N, K,
                      G, p, group_size, split, after_encoder=True,
                      rows_per_block=EXACT_ROWS_PER_BLOCK * tiles_per_warp // parts)
    return _back(out, tx)


IMMA_PLANES = (1, 2, 3, 4)  # imma_gemm.cu: one instantiation per p
IMMA_TILE = 8               # batch rows per launch (the mma's N)
IMMA_WORD_FRAG = 128        # uint32 of B fragments per plane word: [2 digits, 32 lanes, 2]
IMMA_STEP = 4 * 32          # inputs per pipeline step of imma_gemm.cu (kStepWordsI8 words)
IMMA_MODES = (0, 1, 2)      # imma_gemm.cu: groups in a step (g < 128), one group end per step, a step is a group
# Batch 9-16 is one launch of two tiles of 8 batch rows at every precision and group size: each A
# fragment, unpacked once, feeds both tiles' mma (measured 1.43-1.78x two launches of 8 rows, H200).
IMMA_INSTANCES = [(p, m, t) for p in IMMA_PLANES for m in IMMA_MODES for t in (1, 2)]  # imma_gemm.cu <P, MODE, NT>


def imma_tiles(M: int) -> int:
    """Tiles of 8 batch rows in imma_gemm's one launch: 2 for batch 9-16, else 1."""
    return 2 if M > IMMA_TILE else 1


def imma_mode(group_size: int) -> int:
    """imma_gemm.cu's MODE: how the contract's groups fall on its 4-word (128-input) steps."""
    return 2 if group_size == IMMA_STEP else 1 if group_size > IMMA_STEP else 0


def imma_supports(M: int, p: int, group_size: int) -> bool:
    """Whether imma_gemm takes this call: p <= 4, batch 1..16, g <= 256."""
    return 1 <= p <= IMMA_PLANES[-1] and 1 <= M <= MAX_MMA_BATCH and group_size <= MAX_GROUP


def _num_splits(G: int, group_size: int, split: int) -> int:
    """Splits of the exact contract: split // g whole groups each (reference/exact_mma.py)."""
    return -(-G // (split // group_size))


def imma_gemm(x, tiles, alpha, beta=None, *, group_size: int, out=None, split: int | None = None):
    """y = x W_hat^T (float16 [M, N], M <= 16, p <= 4) on int8 tensor cores; bit-exact with
    reference.exact_mma_gemm, so the same bytes as mma_gemm and bmma_gemv.

    tiles: the p planes in the tile layout, uint32 [p, ceil(N/16), ceil(K/256), 128] (``tile_planes(planes[:p])``
    or ``tile_planes(planes)[:p]``), the same array bmma_gemv reads.
    Two launches: one kernel that splits the activations' int16 fixed-point values into their two bytes
    (bcq::encode_digits), then the GEMM, on one tile of 8 batch rows or two (batch 9-16: imma_tiles).
    split: a nominal split of the contract (equalized by reference.exact_mma.contract_split); None = its choice.
    """
    exact_mma.check_split(split)
    x, tiles, alpha, beta, (M, N, K, p, G), dev, stream, out, tx = _gemm_call(
        x, tiles, alpha, beta, group_size, out, MAX_MMA_BATCH, "imma_gemm", planes_name="tiles")
    if not imma_supports(M, p, group_size):
        raise ValueError(f"imma_gemm: takes at most {IMMA_PLANES[-1]} planes and groups of at most {MAX_GROUP} "
                         f"inputs; got p={p}, g={group_size} (use bcq_matmul)")
    if alpha.size >= 2 ** 31:
        raise ValueError(f"alpha: imma_gemm indexes the scales with 32-bit offsets, so at most 2^31 - 1 "
                         f"elements; got {alpha.size} (use bcq_matmul)")
    nt = imma_tiles(M)
    rows = nt * IMMA_TILE  # batch rows the encoder writes (zero past M)
    with stream:
        n_warps = rows * (K // 32)  # one per (batch row, word)
        _launch_exact(dev, stream, "imma_gemm", "bcq::encode_digits", -(-n_warps // 4),
                      (K // 32) * IMMA_WORD_FRAG * nt, f"bcq::imma_gemm<{p}, {imma_mode(group_size)}, {nt}>",
                      x, tiles, alpha, beta, out, M, N, K, G, None, group_size, split, ex_rows=rows)
    return _back(out, tx)


def mma_gemm(x, planes, alpha, beta=None, *, group_size: int, out=None, split: int | None = None):
    """y = x W_hat^T (float16 [M, N], M <= 16) on tensor cores; bit-exact with reference.exact_mma_gemm.

    Two launches: activations to fixed-point digits (encode_activations), then the GEMM.
    split: a nominal split of the contract (equalized by reference.exact_mma.contract_split); None = its choice.
    """
    exact_mma.check_split(split)
    if group_size > MAX_GROUP:
        raise ValueError(f"group_size: mma_gemm takes groups of at most {MAX_GROUP} inputs, got {group_size}")
    x, planes, alpha, beta, (M, N, K, p, G), dev, stream, out, tx = _gemm_call(
        x, planes, alpha, beta, group_size, out, MAX_MMA_BATCH, "mma_gemm")
    with stream:
        _launch_exact(dev, stream, "mma_gemm", "bcq::encode_activations", -(-M * G // 128), M * K,
                      f"bcq::mma_gemm<{1 if M <= 8 else 2}>", x, planes, alpha, beta, out, M, N, K, G, p, group_size,
                      split)
    return _back(out, tx)


def _launch_exact(dev, stream, module, encoder, encode_blocks, n_frag, kernel, x, planes, alpha, beta, out,
                  M, N, K, G, p, group_size, split, after_encoder=False, rows_per_block=EXACT_ROWS_PER_BLOCK,
                  ex_rows=None):
    """The two launches of every exact tensor-core kernel, on the current stream: the encoder turns x
    into the kernel's activation fragments (n_frag words) and each group's E and X, then the GEMM
    (grid: 64-row tiles of 4 warps x contract splits, so that the blocks resident on a SM mix
    splits; p is passed unless the kernel has it as a template parameter, p=None; split None = the
    contract's for the shape).  after_encoder: the kernel may start while its encoder still runs
    (gpu/launch.py), which only a kernel that waits for it (dependent_launch.cuh) may ask for;
    bmma_gemv does, the int8 and fp16 kernels measured slower or no faster that way (docs/kernels.md).
    rows_per_block: 64 but for bmma_gemv (64 tiles_per_warp / parts).  ex_rows: batch rows of the encoder's E
    and X (imma_gemm writes them group-major for all 8 or 16 rows of its launch); None = M."""
    split = exact_mma.contract_split(N, K, group_size, split)
    num_splits = _num_splits(G, group_size, split)
    row_tiles = -(-N // rows_per_block)
    R = M if ex_rows is None else ex_rows
    enc = _encoded(dev, stream.ptr, n_frag + 2 * R * G)
    frag, E, X = enc[:n_frag], enc[n_frag:n_frag + R * G].view(np.int32), enc[n_frag + R * G:].view(np.int32)
    ws, ctr = _workspace(dev, stream.ptr, num_splits * M * N if num_splits > 1 else 0, row_tiles)
    mod = _module(dev, module, split)
    mod.get_function(encoder)((encode_blocks,), (128,),
                              (x, frag, E, X, np.int32(M), np.int32(K), np.int32(group_size)))
    sizes = (M, N, K) + ((p,) if p is not None else ()) + (group_size,)
    launch(mod.get_function(kernel), (row_tiles, num_splits), (128,),
           (frag, E, X, planes, alpha, _null_or(beta), out, ws, ctr) + tuple(np.int32(v) for v in sizes),
           stream=stream, device_id=dev, after_previous=after_encoder)


_encoded_scratch: dict = {}


def _encoded(device_id: int, stream_ptr: int, n_words: int):
    """Scratch for encoded activations (uint32), one per (device, stream), grown as needed."""
    cupy = _cupy()
    buf = _encoded_scratch.get((device_id, stream_ptr))
    if buf is None or buf.size < n_words:
        buf = cupy.empty(n_words, dtype=cupy.uint32)
        _encoded_scratch[(device_id, stream_ptr)] = buf
    return buf[:n_words]


# gpu/dequantize.cu is compiled once per range of precisions: a kernel's registers are those of its most
# demanding precision (48 for p <= 4, 64 for 5-8, as one kernel 64 for all).
DEQUANTIZE_PLANE_RANGES = ((1, 4), (5, 8))


def _dequantize_threads(N: int, K: int) -> int:
    """One thread per word of a row pair (rows n, n + 8 of a 16-row tile): 8 ceil(N/16) K/32."""
    _, row_tiles, _, _ = tile_shape(1, N, K // 32)
    return row_tiles * (TILE_ROWS // 2) * (K // 32)


def dequantize(planes, alpha, beta=None, *, group_size: int, out=None, tiles=None):
    """W_hat float16 [N, K] at precision p = alpha.shape[0]; bit-exact with reference.dequantize_fp16.

    The planes come row-major (planes uint32 [p, N, K/32]) or in the tile layout (planes=None,
    tiles uint32 [p, ceil(N/16), ceil(K/256), 128] = ``tile_planes(planes[:p])``); one of the two.
    """
    if (planes is None) == (tiles is None):
        raise ValueError("planes, tiles: give exactly one of them (the row-major planes or their tile layout)")
    tiled = tiles is not None
    (words, tp), (alpha, _), (beta, _) = (_as_cupy(tiles if tiled else planes, "tiles" if tiled else "planes"),
                                          _as_cupy(alpha, "alpha"), _as_cupy(beta, "beta"))
    planes_shape = _tiled_planes_shape(words, alpha, group_size) if tiled else words.shape
    KW = planes_shape[2] if len(planes_shape) == 3 else 0
    _, N, K, p, G = check_gemv_args((1, KW * 32), "float16", planes_shape, words.dtype, alpha.shape, alpha.dtype,
                                    None if beta is None else beta.shape, None if beta is None else beta.dtype,
                                    group_size)
    if tiled:
        _check_tiles(words, p, N, K)
    threads = _dequantize_threads(N, K)
    if threads > MAX_DIVIDEND:  # indexed in 31 bits (gpu/divide.cuh)
        raise ValueError(f"{'tiles' if tiled else 'planes'}: 8*ceil(N/16)*K/32 must be below 2^31 (one thread per "
                         f"word of a row pair), got N={N}, K={K}")
    dev = _check_device_arrays(alpha=alpha, beta=beta, **{"tiles" if tiled else "planes": words})
    cupy = _cupy()
    with _torch_stream_scope(tp):
        if out is None:
            out = cupy.empty((N, K), dtype=cupy.float16)
        elif out.shape != (N, K) or out.dtype != cupy.float16 or not out.flags.c_contiguous:
            raise ValueError(f"out: must be a C-contiguous float16 {(N, K)} array")
        elif out.data.ptr % 16:
            raise ValueError("out: must start on a 16-byte boundary (the kernel stores 16 bytes at a time)")
        first, last = next(r for r in DEQUANTIZE_PLANE_RANGES if r[0] <= p <= r[1])
        kernel = _module(dev, "dequantize").get_function(f"bcq::dequantize<{first}, {last}>")
        by_kw, by_gw = magic_divisor(KW), magic_divisor(group_size // 32)  # gpu/divide.cuh
        kernel((-(-threads // 256),), (256,),
               (words, alpha, _null_or(beta), out, np.int32(N), np.int32(KW), *map(np.uint32, by_kw), np.int32(G),
                *map(np.uint32, by_gw), np.int32(p), np.int32(tiled)))
    return _back(out, tp)


# Dispatch, from benchmarks/results/gemv_h200.md (H200) and gemv_h100.md (H100): the 1-bit
# tensor-core kernel up to batch 2 (its cost grows with the batch), the int8 tensor-core kernel from
# batch 3 to 16 (its cost does not) and past 16 in launches of 16 rows, all from the tiles; for p > 4
# (or without tiles) the LUT kernel up to batch 4, the fp16 tensor-core kernel on large layers up to 16;
# dequantize + cuBLAS for the rest.
BMMA_UP_TO_BATCH = 2
LUT_UP_TO_BATCH = 4
MMA_FROM_WEIGHTS = 1 << 26
# Past 16 rows, the int8 kernel in launches of 16 rows while there are at most imma_chunk_launches of them,
# then dequantize + cuBLAS (benchmarks/results/h200/large_batch_h200.md and large_batch_1_bit_h200.md, H200).
# p: tiers of (fewest weights, launches): a layer takes the most launches of the tiers whose weights it
# reaches, and none below them.  Measured at batch 32, 48, 64, 96 on the eight layers (the rule picks the
# faster path in all 128 cases of the last run, 126 of the run before; the launches' margins shrink as the
# layer does):
#   1 bit: two won from 2^25 weights (1.47-2.55x), three from 2^26 (1.06-1.72x; 0.99x on 8B down's
#          1.75 x 2^25), four from 3 x 2^25 (1.07-1.27x), six nowhere (at most 0.85x);
#   2 bits: two from 2^25 (1.16-1.74x), three from 3 x 2^26 (1.02-1.16x; 0.97x on 8B gate+up's 3.5 x 2^25);
#   3 bits: two from 2^25 (1.01-1.41x), three nowhere (at most 0.89x);
#   4 bits: two from 3 x 2^26 (1.01-1.12x; at most 0.93x below).
# 8B q/k/v and o (below 2^25) lost with two launches at every p (0.61-0.96x).
IMMA_CHUNK_RULE = {1: ((1 << 25, 2), (1 << 26, 3), (3 << 25, 4)),
                   2: ((1 << 25, 2), (3 << 26, 3)),
                   3: ((1 << 25, 2),),
                   4: ((3 << 26, 2),)}


def imma_chunk_launches(p: int, N: int, K: int) -> int:
    """The most launches of 16 rows bcq_matmul gives the int8 kernel before dequantize + cuBLAS (1: none)."""
    return max([1] + [launches for fewest_weights, launches in IMMA_CHUNK_RULE[p] if N * K >= fewest_weights])


def bcq_matmul(x, planes, alpha, beta=None, *, group_size: int, tiles=None):
    """y = x W_hat^T for any batch, by the fastest measured path (see the thresholds above).

    planes: the p row-major planes, or None when tiles are given.
    tiles: ``tile_planes(planes)`` (or of more planes: its first p are used, p = alpha.shape[0]), made once
    per weight.  Both tensor-core kernels (p <= 4, batch 1-16) read only those, and so does dequantize;
    with the tiles alone a p <= 4 weight is served at every batch from one copy of its planes.  Past 16
    rows the int8 kernel runs once per 16 rows while that is at most imma_chunk_launches(p, N, K) launches
    (each row still gets the exact contract's bytes), then dequantize + cuBLAS takes over.  Without
    them (planes only) batches up to 16 take the LUT or fp16 tensor-core kernel (the same bytes as the
    int8 one on the tensor-core path, slower) or dequantize + cuBLAS.

    The kernel paths are bit-exact with their references (the tensor-core ones with
    reference.exact_mma_gemm, the LUT one with reference.lut_gemv); dequantize + cuBLAS is not
    (cuBLAS fixes no summation order).
    """
    if planes is None and tiles is None:
        raise ValueError("planes, tiles: give the row-major planes, their tile layout (gpu.tile_planes), or both")
    M = x.shape[0] if len(x.shape) == 2 else 0
    p = alpha.shape[0] if len(alpha.shape) == 3 else 0
    N, K = (alpha.shape[1], alpha.shape[2] * group_size) if len(alpha.shape) == 3 else (0, 0)
    if tiles is not None:
        tiles = tiles[:p]
        if bmma_supports(M, p, group_size) and M <= BMMA_UP_TO_BATCH:
            return bmma_gemv(x, tiles, alpha, beta, group_size=group_size)
        if imma_supports(min(M, MAX_MMA_BATCH), p, group_size) and p * N * (K // group_size) < 2 ** 31:
            if M <= MAX_MMA_BATCH:
                return imma_gemm(x, tiles, alpha, beta, group_size=group_size)
            if -(-M // MAX_MMA_BATCH) <= imma_chunk_launches(p, N, K):
                return _imma_chunks(x, tiles, alpha, beta, group_size)
    if planes is not None and 1 <= M <= LUT_UP_TO_BATCH:
        return lut_gemv(x, planes, alpha, beta, group_size=group_size)
    if (planes is not None and 1 <= M <= MAX_MMA_BATCH and N * K >= MMA_FROM_WEIGHTS
            and group_size <= MAX_GROUP):
        return mma_gemm(x, planes, alpha, beta, group_size=group_size)
    xc, tx = _activations(x)
    W = dequantize(planes, alpha, beta, group_size=group_size, tiles=None if planes is not None else tiles)
    W = _as_cupy(W, "W")[0]
    with _torch_stream_scope(tx):
        y = xc @ W.T
    return _back(y, tx)


def _imma_chunks(x, tiles, alpha, beta, group_size: int):
    """imma_gemm on rows 16j .. 16j + 15 of x, into one float16 [M, N] output.  Rows of x never interact in
    the exact contract, so every row gets the bytes reference.exact_mma_gemm gives it in a batch of one."""
    xc, tx = _activations(x)
    cupy = _cupy()
    with _torch_stream_scope(tx):  # imma_gemm then runs on the caller's stream (torch's, for torch inputs)
        out = cupy.empty((xc.shape[0], alpha.shape[1]), dtype=cupy.float16)
        for r in range(0, xc.shape[0], MAX_MMA_BATCH):
            imma_gemm(xc[r:r + MAX_MMA_BATCH], tiles, alpha, beta, group_size=group_size,
                      out=out[r:r + MAX_MMA_BATCH])
    return _back(out, tx)


def _activations(x):
    """x as a CuPy array (and whether it came from torch), checked to be float16 [M, K]."""
    xc, tx = _as_cupy(x, "x")
    if len(xc.shape) != 2 or str(xc.dtype) != "float16":
        raise ValueError(f"x: must be float16 [M, K], got {xc.dtype} {tuple(xc.shape)}")
    return xc, tx


def _back(a, to_torch: bool):
    if not to_torch:
        return a
    import torch
    return torch.from_dlpack(a)

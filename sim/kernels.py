"""Kernel constants (sim/kernels.toml) as frozen dataclasses: one per modelled kernel.

These are software facts, not hardware: instruction counts read off a kernel's loop nest, launch
geometry of our wrapper, and the efficiency factors and per-call latencies fitted to measurements.
Each field's source is in ``.sources[field]``.  To try a variant, ``dataclasses.replace`` one:

    >>> import dataclasses
    >>> from sim.kernels import default_kernels
    >>> kc = default_kernels()
    >>> faster = dataclasses.replace(kc, bcq_lut=dataclasses.replace(kc.bcq_lut, fixed_s=2e-6))
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from .sourced import build, read_toml

KERNELS_TOML = Path(__file__).with_name("kernels.toml")


def _no_sources():
    return MappingProxyType({})


@dataclass(frozen=True)
class CublasFP16:
    memory_efficiency: float
    fixed_s: float
    tensor_efficiency: float
    name: str = "cublas_fp16"
    sources: Mapping[str, str] = field(default_factory=_no_sources, compare=False)


@dataclass(frozen=True)
class BcqLut:
    max_batch: int
    threads_per_block: int
    rows_per_step: int
    mu: int
    table_entry_bytes: int
    split_inputs: int
    row_quantum: int
    max_rows_per_block: int
    acc_floats: int
    smem_other_bytes: int
    instr_per_word: float
    instr_per_lookup: float
    instr_per_row_tile: float
    smem_per_row_tile: float
    instr_per_table_entry: float
    issue_efficiency: float
    smem_efficiency: float
    memory_efficiency: float
    step_latency_s: float
    tile_latency_s: float
    split_epilogue_s: float
    fixed_s: float
    name: str = "bcq_lut"
    sources: Mapping[str, str] = field(default_factory=_no_sources, compare=False)


@dataclass(frozen=True)
class BcqExact:
    """Our exact tensor-core kernels (bcq_bmma: 1-bit mma, bcq_imma: int8 mma), gpu/{bmma_gemv,imma_gemm}.cu.

    time = fixed + split_finish [splits > 1] + (chain^k + memory^k)^(1/k)   (one launch takes the batch),
    chain = waves x steps per warp x batch factor x (step_latency + plane_step_latency x p
                                                     + (tiles - 1) x tile_plane_step_latency x p),
    steps per warp = split steps / parts (bcq_bmma: 2 parts where gpu/kernels.py bmma_parts takes them);
    tiles = max_tiles batch tiles of batch_per_launch rows in one launch where M > batch_per_launch
    (bcq_imma: gpu/kernels.py imma_tiles), else 1.
    """
    max_batch: int
    max_planes: int
    max_group: int
    rows_per_block: int
    warps_per_block: int
    step_inputs: int
    batch_per_launch: int
    blocks_per_sm: int
    blocks_per_sm_reduced: int
    reduce_above: int
    batch_scales_chain: int
    max_mma_columns: int
    max_parts: int
    parts_up_to_planes: int
    warp_slots_per_sm: int
    max_tiles: int
    split_max_inputs: int
    split_min_inputs: int
    split_work: int
    overlap_norm: float
    memory_efficiency: float
    split_finish_s: float
    step_latency_s: float
    plane_step_latency_s: float
    tile_plane_step_latency_s: float
    fixed_s: float
    name: str = ""
    sources: Mapping[str, str] = field(default_factory=_no_sources, compare=False)


@dataclass(frozen=True)
class AnyPrec:
    max_batch: int
    min_bits: int
    max_bits: int
    centroid_bytes: int
    instr_per_weight_plane: float
    instr_per_weight_column: float
    fixed_s: float
    memory_efficiency: float
    name: str = "anyprec"
    sources: Mapping[str, str] = field(default_factory=_no_sources, compare=False)


@dataclass(frozen=True)
class BcqFixed:
    max_batch: int
    mu: int
    table_entry_bytes: int
    rows_per_block: int
    inputs_per_block: int
    bank_conflict_factor: float
    instr_per_word: float
    instr_per_lookup: float
    instr_per_table_entry: float
    fixed_s: float
    memory_efficiency: float
    issue_efficiency: float
    smem_efficiency: float
    name: str = "bcq_fixed"
    sources: Mapping[str, str] = field(default_factory=_no_sources, compare=False)


@dataclass(frozen=True)
class Int4:
    dequant_instr_per_weight: float
    mma_min_batch: int
    memory_efficiency: float
    fixed_s: float
    name: str = "int4"
    sources: Mapping[str, str] = field(default_factory=_no_sources, compare=False)


@dataclass(frozen=True)
class Dequantize:
    instr_per_weight_plane: float
    instr_per_weight: float
    memory_efficiency: float
    fixed_s: float
    name: str = "dequantize"
    sources: Mapping[str, str] = field(default_factory=_no_sources, compare=False)


@dataclass(frozen=True)
class Timing:
    do_bench_extra_cublas_s: float
    do_bench_extra_kernel_s: float
    name: str = "timing"
    sources: Mapping[str, str] = field(default_factory=_no_sources, compare=False)


@dataclass(frozen=True)
class Decode:
    small_kernels_per_block: int
    attention_memory_efficiency: float
    kv_bytes_per_value: int
    name: str = "decode"
    sources: Mapping[str, str] = field(default_factory=_no_sources, compare=False)


@dataclass(frozen=True)
class KernelConstants:
    cublas_fp16: CublasFP16
    bcq_lut: BcqLut
    bcq_bmma: BcqExact
    bcq_imma: BcqExact
    anyprec: AnyPrec
    bcq_fixed: BcqFixed
    int4: Int4
    dequantize: Dequantize
    timing: Timing
    decode: Decode


def _resolve_same_as(data: dict, path) -> None:
    """Replace {same_as = "section.field", source} leaves by that constant's value, in place."""
    for section, table in data.items():
        for key, leaf in table.items():
            if isinstance(leaf, dict) and "same_as" in leaf:
                if set(leaf) != {"same_as", "source"}:
                    raise ValueError(f"{path}:{section}.{key}: a same_as leaf has exactly same_as and source")
                ref_section, _, ref_key = str(leaf["same_as"]).partition(".")
                ref = data.get(ref_section, {}).get(ref_key)
                if not isinstance(ref, dict) or "value" not in ref:
                    raise ValueError(f"{path}:{section}.{key}: same_as {leaf['same_as']!r} names no constant "
                                     "with a value")
                table[key] = {"value": ref["value"], "source": f"{leaf['source']} (same as {leaf['same_as']})"}


def load_kernels(path: str | Path = KERNELS_TOML) -> KernelConstants:
    data = read_toml(path)
    _resolve_same_as(data, path)
    sections = {f: cls for f, cls in KernelConstants.__annotations__.items()}
    missing, unknown = set(sections) - set(data), set(data) - set(sections)
    if missing or unknown:
        raise ValueError(f"{path}: sections must be exactly {sorted(sections)}; missing {sorted(missing)}, "
                         f"unknown {sorted(unknown)}")
    classes = {"cublas_fp16": CublasFP16, "bcq_lut": BcqLut, "bcq_bmma": BcqExact, "bcq_imma": BcqExact,
               "anyprec": AnyPrec, "bcq_fixed": BcqFixed,
               "int4": Int4, "dequantize": Dequantize, "timing": Timing, "decode": Decode}
    return KernelConstants(**{s: build(classes[s], s, data[s], f"{Path(path).name}:{s}") for s in classes})


@functools.lru_cache(maxsize=None)
def default_kernels() -> KernelConstants:
    return load_kernels()

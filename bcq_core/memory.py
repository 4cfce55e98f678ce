r"""Memory accounting of multi-precision BCQ: what is stored, what a p-bit call reads, what sharing saves.

For one (N, K) matrix with group size g (G = K / g groups per row), P stored planes and a precision
set S (e.g. {2, 3, 4}), with s bytes per scale (2, fp16):

    planes          P * N * K / 8                     (1 bit per weight and plane)
    first p planes  p * N * K / 8                     (what a p-bit call reads)
    alpha_p         p * N * G * s                     (every precision keeps its own p scales per group)
    beta_p          N * G * s                         (asymmetric BCQ only)
    total           planes + sum_{p in S} (alpha_p + beta_p)
    separate        sum_{p in S} (first p planes + alpha_p + beta_p)   (each precision its own model)

Per weight, for S = {2, 3, 4}, g = 128, fp16 scales, symmetric: total = 4/8 + 9 * 2/128 = 0.640625 B,
separate = 9/8 + 9 * 2/128 = 1.265625 B, so sharing the planes saves 49.4 % whatever the shapes.
Units: bytes; GB = 1e9 bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .checks import check_bits
from .layout import WORD_BITS, PackedBCQ

GB = 1e9
FP16_BYTES = 2


def _merge(a: Mapping[int, int], b: Mapping[int, int]) -> dict[int, int]:
    return {p: a.get(p, 0) + b.get(p, 0) for p in sorted(set(a) | set(b))}


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes of one multi-precision BCQ matrix, or of a whole model (``a + b`` sums matrices).

    planes_bytes: all stored planes.   first_planes_bytes[p]: planes[:p], what a p-bit call reads.
    alpha_bytes[p], beta_bytes[p]: the scales / offsets of precision p (beta all 0 if symmetric).
    """

    num_weights: int
    planes_bytes: int
    first_planes_bytes: dict[int, int] = field(default_factory=dict)
    alpha_bytes: dict[int, int] = field(default_factory=dict)
    beta_bytes: dict[int, int] = field(default_factory=dict)

    @property
    def precisions(self) -> tuple[int, ...]:
        return tuple(sorted(self.alpha_bytes))

    @property
    def scale_bytes(self) -> int:
        return sum(self.alpha_bytes.values()) + sum(self.beta_bytes.values())

    @property
    def total_bytes(self) -> int:
        """The multi-precision model as stored: all planes + every precision's scales."""
        return self.planes_bytes + self.scale_bytes

    def read_bytes(self, p: int) -> int:
        """Bytes a p-bit call reads: the first p planes and the p-bit scales (and offsets)."""
        return self.first_planes_bytes[p] + self.alpha_bytes[p] + self.beta_bytes.get(p, 0)

    @property
    def separate_bytes(self) -> int:
        """The same precisions stored as separate single-precision models (p planes + p scales each)."""
        return sum(self.read_bytes(p) for p in self.precisions)

    @property
    def saving_bytes(self) -> int:
        return self.separate_bytes - self.total_bytes

    @property
    def saving_fraction(self) -> float:
        return self.saving_bytes / self.separate_bytes if self.separate_bytes else 0.0

    def __add__(self, other: "MemoryBreakdown") -> "MemoryBreakdown":
        return MemoryBreakdown(self.num_weights + other.num_weights, self.planes_bytes + other.planes_bytes,
                               _merge(self.first_planes_bytes, other.first_planes_bytes),
                               _merge(self.alpha_bytes, other.alpha_bytes), _merge(self.beta_bytes, other.beta_bytes))

    def to_dict(self) -> dict:
        """JSON-ready: every byte count, per-precision dicts keyed by str(p)."""
        per_p = lambda d: {str(p): v for p, v in sorted(d.items())}  # noqa: E731
        return {"num_weights": self.num_weights, "planes_bytes": self.planes_bytes,
                "first_planes_bytes": per_p(self.first_planes_bytes), "alpha_bytes": per_p(self.alpha_bytes),
                "beta_bytes": per_p(self.beta_bytes), "read_bytes": {str(p): self.read_bytes(p) for p in self.precisions},
                "total_bytes": self.total_bytes, "separate_bytes": self.separate_bytes,
                "saving_bytes": self.saving_bytes, "saving_fraction": round(self.saving_fraction, 6)}


def memory_of_shape(N: int, K: int, *, group_size: int, num_planes: int, precisions, offsets: bool = False,
                    scale_bytes: int = FP16_BYTES) -> MemoryBreakdown:
    """Bytes of an (N, K) multi-precision BCQ from its shapes alone (the formulas of the module docstring)."""
    precisions = check_bits("precisions", precisions)
    if K % WORD_BITS or K % group_size:
        raise ValueError(f"K: must be a multiple of 32 and of group_size={group_size}, got {K}")
    if precisions[-1] > num_planes:
        raise ValueError(f"num_planes: precisions {precisions} need {precisions[-1]}, got {num_planes}")
    plane, G = N * K // 8, K // group_size
    return MemoryBreakdown(
        num_weights=N * K, planes_bytes=num_planes * plane,
        first_planes_bytes={p: p * plane for p in precisions},
        alpha_bytes={p: p * N * G * scale_bytes for p in precisions},
        beta_bytes={p: N * G * scale_bytes if offsets else 0 for p in precisions})


def memory_of(q: PackedBCQ) -> MemoryBreakdown:
    """Bytes of one PackedBCQ (equal to its arrays' nbytes)."""
    N, K = q.shape
    return memory_of_shape(N, K, group_size=q.group_size, num_planes=q.num_planes, precisions=q.precisions,
                           offsets=q.beta is not None)


def model_memory(matrices: Mapping[str, PackedBCQ]) -> MemoryBreakdown:
    """Sum over a model's matrices."""
    return sum((memory_of(q) for q in matrices.values()), MemoryBreakdown(0, 0))


def memory_of_meta(m: Mapping) -> MemoryBreakdown:
    """Bytes of one matrix described by model-file metadata (``fileio.read_meta(path)['matrices'][name]``)."""
    N, K = m["shape"]
    return memory_of_shape(N, K, group_size=m["group_size"], num_planes=m["num_planes"],
                           precisions=m["precisions"], offsets=m["offsets"])


# ----------------------------------------------------------------------------- the paper's check

# Llama-3.1-8B (meta-llama/Llama-3.1-8B config.json): hidden 4096, intermediate 14336, 32 layers,
# 32 query heads and 8 key/value heads of dimension 128 (so k_proj/v_proj are 1024 x 4096), vocab 128256.
LLAMA31_8B = {"num_layers": 32, "hidden": 4096, "intermediate": 14336, "num_heads": 32, "num_kv_heads": 8,
              "head_dim": 128, "vocab": 128256}
PAPER_ANYBCQ_GB = {"total": 4.99, "separate": 9.85, "planes": 3.89, "alpha_4": 0.49}  # PAPERS.md


def llama31_8b_linears(*, include_lm_head: bool = True, num_kv_heads: int = LLAMA31_8B["num_kv_heads"]):
    """[(name, N, K, count)] of the nn.Linear layers of Llama-3.1-8B (N outputs, K inputs)."""
    c = LLAMA31_8B
    h, f, L, kv = c["hidden"], c["intermediate"], c["num_layers"], num_kv_heads * c["head_dim"]
    layers = [("q_proj", h, h, L), ("k_proj", kv, h, L), ("v_proj", kv, h, L), ("o_proj", h, h, L),
              ("gate_proj", f, h, L), ("up_proj", f, h, L), ("down_proj", h, f, L)]
    return layers + ([("lm_head", c["vocab"], h, 1)] if include_lm_head else [])


def llama31_8b_memory(bits=(2, 3, 4), *, group_size: int = 128, include_lm_head: bool = True,
                      num_kv_heads: int = LLAMA31_8B["num_kv_heads"]) -> MemoryBreakdown:
    """The AnyBCQ paper's memory check for Llama-3.1-8B, from shapes alone.

    Counted: every nn.Linear a generic "quantize all linears" sweep finds: per decoder block q_proj
    4096x4096, k_proj and v_proj 1024x4096 (grouped-query attention: 8 KV heads of 128), o_proj
    4096x4096, gate_proj and up_proj 14336x4096, down_proj 4096x14336 (218.1 M weights, x 32 blocks =
    6.98 G), plus lm_head 128256x4096 (0.53 G): 7.50 G weights.  Not counted: the token embedding and
    the RMSNorm weights, which stay in fp16 whatever the precision (they are the same in every model).

    With P = 4 planes and 2 + 3 + 4 fp16 scales per group of 128 this gives 3.75 GB of planes,
    0.47 GB per 4-scale set, 4.81 GB in all, against 9.50 GB for three separate 2/3/4-bit models:
    3.7 % under the paper's 4.99 and 9.85 GB, and the same 49.4 % saving (a ratio fixed by bits and g).
    Without lm_head: 4.47 / 8.83 GB (10 % under).  The paper's numbers are exactly 7.78 G weights x
    (0.640625 B multi, 1.265625 B separate); 7.78 G is what one gets by counting k_proj and v_proj as
    4096x4096 (``num_kv_heads=32``, no lm_head), so the paper most likely ignored grouped-query
    attention [? not stated in the paper]; ``llama31_8b_memory(num_kv_heads=32, include_lm_head=False)``
    reproduces 4.99 / 9.85 GB to 0.1 %.
    """
    total = MemoryBreakdown(0, 0)
    for _, N, K, count in llama31_8b_linears(include_lm_head=include_lm_head, num_kv_heads=num_kv_heads):
        m = memory_of_shape(N, K, group_size=group_size, num_planes=max(bits), precisions=bits)
        for _ in range(count):
            total = total + m
    return total

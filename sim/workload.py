"""Workloads: model shapes as data (sim/data/models.toml) and decode tokens/s of a whole model.

One decode step of batch M (one new token per sequence) costs

    step_s = sum over blocks and linears  t(method, N, K, M, bits of that layer)
           + t(lm_head)                                  fp16 unless lm_head_bits is given
           + layers x max(launch, KV bytes / (BW x eff))   attention: read the K and V cache
           + layers x small_kernels_per_block x launch     norms, rope, activation, residual
    tokens_per_s = M / step_s

Linear names per block (fused, as our benchmark and ANCHORS.md measure them): 'q/k/v', 'o',
'gate+up', 'down' (gated FFN) or 'fc1', 'fc2' (plain FFN).  ``bits`` is a number or a precision
map {name or 'BLOCK.name' or 'default': bits}, e.g. {'default': 3, 'down': 4, '0.q/k/v': 4}.
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from . import accel, gpu as gpu_methods
from .hardware import GPU, get_device
from .kernels import default_kernels
from .sourced import read_toml

MODELS_TOML = Path(__file__).parent / "data" / "models.toml"
G_METHODS = ("bcq_lut", "bcq_bmma", "bcq_imma", "bcq_imma_chunks", "bcq_dequant", "bcq_auto", "bcq_fixed", "int4")  # take a group size g


@dataclass(frozen=True)
class ModelConfig:
    name: str
    source: str
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int
    tied_embeddings: bool
    ffn: str
    group_size: int

    def __post_init__(self):
        if self.ffn not in ("gated", "plain"):
            raise ValueError(f"{self.name}.ffn: must be 'gated' or 'plain', got {self.ffn!r}")
        for f in ("hidden", "intermediate", "heads", "kv_heads", "head_dim", "layers", "vocab", "group_size"):
            if not (isinstance(getattr(self, f), int) and getattr(self, f) > 0):
                raise ValueError(f"{self.name}.{f}: must be a positive integer")

    def linears(self, fused: bool = True) -> list[tuple[str, int, int]]:
        """(name, N, K) of one block's linear layers."""
        h, qd, kvd, f = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        attn = [("q/k/v", qd + 2 * kvd, h)] if fused else [("q", qd, h), ("k", kvd, h), ("v", kvd, h)]
        attn.append(("o", h, qd))
        if self.ffn == "plain":
            return attn + [("fc1", f, h), ("fc2", h, f)]
        mlp = [("gate+up", 2 * f, h)] if fused else [("gate", f, h), ("up", f, h)]
        return attn + mlp + [("down", h, f)]

    @property
    def lm_head(self) -> tuple[int, int]:
        return self.vocab, self.hidden

    @property
    def parameters(self) -> int:
        """Weights of the linears, embeddings and lm_head (norms and biases left out)."""
        block = sum(N * K for _, N, K in self.linears())
        emb = self.vocab * self.hidden
        return self.layers * block + emb * (1 if self.tied_embeddings else 2)


def load_models(path: str | Path = MODELS_TOML) -> dict[str, ModelConfig]:
    data = read_toml(path)
    out = {}
    for name, table in data.items():
        if "source" not in table:
            raise ValueError(f"{path}:{name}: needs a source string (where the shapes come from)")
        try:
            out[name] = ModelConfig(name=name, **table)
        except TypeError as e:
            raise ValueError(f"{path}:{name}: {e}") from e
    return out


@functools.lru_cache(maxsize=None)
def _default_models() -> dict[str, ModelConfig]:
    return load_models()


def get_model(name: str | ModelConfig) -> ModelConfig:
    if isinstance(name, ModelConfig):
        return name
    models = _default_models()
    key = name.lower()
    if key not in models:
        raise ValueError(f"model: unknown model {name!r}; known: {', '.join(models)}")
    return models[key]


def layer_bits(bits, block: int, name: str):
    """Precision of one linear from a number or a precision map."""
    if not isinstance(bits, Mapping):
        return bits
    for key in (f"{block}.{name}", name, "default"):
        if key in bits:
            return bits[key]
    raise ValueError(f"bits: no precision for block {block} layer {name!r} (add it or a 'default')")


@dataclass(frozen=True)
class DecodeResult:
    device: str
    model: str
    method: str
    bits: object
    batch: int
    context: int
    step_s: float
    linear_s: float
    lm_head_s: float
    attention_s: float
    other_s: float
    weight_bytes: float
    layers: list = field(default_factory=list)  # (name, N, K, bits, count, time_s, binding)
    energy_J: float | None = None                # accelerators: energy of the step
    @property
    def tokens_per_s(self) -> float:
        return self.batch / self.step_s

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("device", "model", "method", "batch", "context", "step_s", "linear_s",
                                           "lm_head_s", "attention_s", "other_s", "weight_bytes", "energy_J")}
        d["bits"] = dict(self.bits) if isinstance(self.bits, Mapping) else self.bits
        d["tokens_per_s"] = self.tokens_per_s
        d["layers"] = [dict(zip(("name", "N", "K", "bits", "count", "time_s", "binding"), row)) for row in self.layers]
        return d


def decode(device, model, method: str = "bcq_lut", bits=None, batch: int = 1, *, context: int = 1024,
           fused: bool = True, lm_head_bits=None, kernels=None) -> DecodeResult:
    """Decode step time and tokens/s of ``model`` on ``device`` (a GPU, or an accelerator for its GEMMs)."""
    dev, cfg, kc = get_device(device), get_model(model), kernels or default_kernels()
    if not (isinstance(batch, (int, np.integer)) and batch >= 1):
        raise ValueError(f"batch: must be a positive integer, got {batch!r}")
    on_gpu = isinstance(dev, GPU)
    if on_gpu:
        method = gpu_methods.method_name(method)
    else:
        method = dev.name
    g = cfg.group_size
    counts = Counter()
    for i in range(cfg.layers):
        for name, N, K in cfg.linears(fused):
            b = None if method == "fp16" else layer_bits(bits, i, name)
            counts[(name, N, K, b)] += 1

    def price(N, K, b, m=method):
        if on_gpu:
            opts = {"kernels": kc} | ({"g": g} if m in G_METHODS else {})
            return gpu_methods.gemv(dev, m, N, K, batch, b, **opts)
        return accel.gemm(dev, N, K, batch, b)

    rows, linear_s, weight_bytes, energy = [], 0.0, 0.0, 0.0
    for (name, N, K, b), n in counts.items():
        c = price(N, K, b)
        t = float(c.time_s)
        rows.append((name, N, K, b, n, t, str(c.binding)))
        linear_s += n * t
        weight_bytes += n * float(c.bytes_total - c.bytes.get("x", 0) - c.bytes.get("y", 0))
        if c.energy_J is not None:
            energy += n * float(c.energy_total_J)
    if np.isnan(linear_s):
        weight_bytes = float("nan")  # some layer's precision is unsupported by the method
    N, K = cfg.lm_head
    head = price(N, K, lm_head_bits, method if lm_head_bits is not None else "fp16") if on_gpu or lm_head_bits \
        else None
    lm_head_s = float(head.time_s) if head is not None else 0.0
    if head is not None:
        rows.append(("lm_head", N, K, lm_head_bits, 1, lm_head_s, str(head.binding)))
        weight_bytes += float(head.bytes_total - head.bytes.get("x", 0) - head.bytes.get("y", 0))
    attention_s = other_s = 0.0
    if on_gpu:
        kv_bytes = 2 * cfg.kv_heads * cfg.head_dim * context * kc.decode.kv_bytes_per_value * batch
        per_block = max(dev.launch_s, kv_bytes / (dev.dram_bandwidth_Bps * kc.decode.attention_memory_efficiency))
        attention_s = cfg.layers * per_block
        other_s = cfg.layers * kc.decode.small_kernels_per_block * dev.launch_s
    step = linear_s + lm_head_s + attention_s + other_s
    return DecodeResult(dev.name, cfg.name, method, bits, batch, context, step, linear_s, lm_head_s, attention_s,
                        other_s, weight_bytes, rows, None if on_gpu else energy)

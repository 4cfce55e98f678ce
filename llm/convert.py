"""Convert a transformers causal LM's ``nn.Linear`` layers to ``BCQLinear`` in place; choose the precision.

    convert(model, QuantConfig(bits=(2, 3, 4), group_size=64))   # AnyBCQ, every decoder linear
    set_precision(model, 3)                                       # every BCQLinear now serves 3 bits
    with precision(model, 2): model(ids)                          # per-call override, restored after

Which layers: every ``nn.Linear`` except those named in ``skip`` (default: ``lm_head``); the token
embedding is an ``nn.Embedding`` and never touched.  For SmolLM2 that is 30 blocks x 7 projections.

A quantizer is either a ``bcq_core.quantize.QuantConfig`` (``method='fixed'`` with one bit-width uses
quantize_fixed) or any callable ``(name, W float32 [N, K]) -> BCQ``: the baselines (RTN as an
asymmetric BCQ, one fixed-precision BCQ per model) plug in the same way.  Every layer is checked
before any work: the group size must divide its K (the error names the layer).
"""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bcq_core.bcq import BCQ
from bcq_core.checks import check_precision
from bcq_core.layout import PackedBCQ

from .bcq_linear import TILED_MAX_PLANES, BCQLinear

DEFAULT_SKIP = ("lm_head",)
Quantizer = Callable[[str, np.ndarray], BCQ]


def linear_layers(model: nn.Module, skip=DEFAULT_SKIP) -> dict[str, nn.Linear]:
    """{qualified name: nn.Linear} of the layers to quantize, in module order (ValueError if none)."""
    layers = {name: m for name, m in model.named_modules()
              if type(m) is nn.Linear and name.split(".")[-1] not in skip and name not in skip}
    if not layers:
        raise ValueError(f"model: {type(model).__name__} has no nn.Linear layers to quantize "
                         f"(skipping {list(skip)}); is it already converted?")
    return layers


def bcq_layers(model: nn.Module) -> dict[str, BCQLinear]:
    """{qualified name: BCQLinear} of a converted model."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BCQLinear)}


def use_tile_layout(model: nn.Module, max_planes: int = TILED_MAX_PLANES) -> nn.Module:
    """Keep the planes of every BCQLinear with at most max_planes planes only in the tensor-core kernels'
    tile layout (``BCQLinear.use_tile_layout``), on any device.  A move to CUDA does this by itself for
    layers of at most 4 planes; calling it first tiles on the CPU, so the row-major planes never reach the
    GPU.  Layers with more planes keep the row-major ones, which their p > 4 kernels read.  Returns model."""
    for m in bcq_layers(model).values():
        if m.num_planes <= max_planes:
            m.use_tile_layout()
    return model


def check_group_size(layers: dict[str, nn.Linear], group_size: int) -> None:
    """g must be a positive multiple of 32 dividing every layer's in_features; the error names the layer."""
    if not isinstance(group_size, int) or group_size <= 0 or group_size % 32:
        raise ValueError(f"group_size: must be a positive multiple of 32, got {group_size}")
    for name, m in layers.items():
        if m.in_features % group_size:
            raise ValueError(f"group_size: {group_size} does not divide layer {name!r} "
                             f"(in_features={m.in_features}); try one of {divisors(m.in_features)}")


def divisors(K: int) -> list[int]:
    """Group sizes (multiples of 32) that divide K."""
    return [g for g in range(32, K + 1, 32) if K % g == 0]


def as_quantizer(config) -> tuple[Quantizer, int]:
    """(callable, group size) from a QuantConfig or a (callable, group size) pair."""
    if isinstance(config, tuple):
        return config
    from bcq_core.quantize import quantize, quantize_fixed

    if config.method == "fixed":
        if len(config.bits) != 1:
            raise ValueError(f"config: a fixed-precision model serves one bit-width; convert one model per "
                             f"bit-width with bits=(p,), got bits={tuple(config.bits)}")
        (p,) = config.bits
        return (lambda name, W: quantize_fixed(W, config)[p]), config.group_size
    return (lambda name, W: quantize(W, config)), config.group_size


def quantize_linears(model: nn.Module, quantizer: Callable[[str, np.ndarray], object], group_size: int,
                     skip=DEFAULT_SKIP, desc: str = "quantize", progress: bool = True) -> dict[str, object]:
    """{name: quantizer(name, W)} over every layer to convert, with a tqdm bar; the model is not changed.

    The quantizer may return anything (a BCQ, a dict of them, a baseline's own result).
    """
    layers = linear_layers(model, skip)
    check_group_size(layers, group_size)
    out = {}
    for name, m in tqdm(layers.items(), desc=desc, unit="layer", leave=False, disable=not progress):
        out[name] = quantizer(name, m.weight.detach().float().cpu().numpy())
    return out


def replace_linears(model: nn.Module, weights: dict[str, BCQ | PackedBCQ]) -> nn.Module:
    """Swap each named nn.Linear for a BCQLinear of its BCQ (bias kept); in place, returns model."""
    modules = dict(model.named_modules())
    for name, q in weights.items():
        old = modules.get(name)
        if not isinstance(old, nn.Linear):
            raise ValueError(f"weights: {name!r} is not an nn.Linear of this model")
        N, K = q.shape
        if (N, K) != (old.out_features, old.in_features):
            raise ValueError(f"weights[{name!r}]: shape {(N, K)} does not match the layer's "
                             f"{(old.out_features, old.in_features)}")
        model.set_submodule(name, BCQLinear.from_bcq(q, old.bias).to(old.weight.device))
    return model


def convert(model: nn.Module, config, skip=DEFAULT_SKIP) -> nn.Module:
    """Quantize and replace every linear layer (see the module docstring); in place, returns model."""
    quantizer, g = as_quantizer(config)
    return replace_linears(model, quantize_linears(model, quantizer, g, skip))


def model_precisions(model: nn.Module) -> tuple[int, ...]:
    """Precisions that every BCQLinear of the model stores (ValueError if the model has none)."""
    layers = bcq_layers(model)
    if not layers:
        raise ValueError(f"model: {type(model).__name__} has no BCQLinear layers; convert it first")
    common = set.intersection(*(set(m.precisions) for m in layers.values()))
    return tuple(sorted(common))


def set_precision(model: nn.Module, p: int) -> None:
    """Serve precision p from every BCQLinear (ValueError naming the stored precisions if absent)."""
    check_precision("p", p, model_precisions(model))
    for m in bcq_layers(model).values():
        m.set_precision(p)


def get_precision(model: nn.Module) -> int:
    """The precision the model serves now (ValueError if its layers disagree)."""
    ps = {m.precision for m in bcq_layers(model).values()}
    if len(ps) != 1:
        raise ValueError(f"model: layers serve different precisions {sorted(ps)}")
    return ps.pop()


@contextlib.contextmanager
def precision(model: nn.Module, p: int):
    """Serve precision p inside the block; every layer's previous precision is restored after."""
    layers = bcq_layers(model)
    before = {name: m.precision for name, m in layers.items()}
    set_precision(model, p)
    try:
        yield model
    finally:
        for name, m in layers.items():
            m.precision = before[name]


def dense_copy_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Overwrite nn.Linear weights with dense float arrays [N, K] (used for non-BCQ baselines)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, W in weights.items():
            m = modules[name]
            if tuple(W.shape) != tuple(m.weight.shape):
                raise ValueError(f"weights[{name!r}]: shape {tuple(W.shape)} != {tuple(m.weight.shape)}")
            m.weight.copy_(torch.as_tensor(W, dtype=m.weight.dtype))

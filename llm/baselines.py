r"""The baselines in the model pipeline: RTN, fixed-precision BCQ, Any-Precision LLM (with its Fisher weights).

Every method becomes quantized linear layers of the same transformers model and is scored by the same
``llm.evaluate`` code on the same windows:

* RTN b-bit: ``bcq_core.rtn.rtn_bcq`` is an exact asymmetric BCQ, so it is served by ``BCQLinear``.
* fixed BCQ: ``bcq_core.quantize.quantize_fixed`` fits each bit-width on its own; one model per p.
* Any-Precision LLM: ``bcq_core.anyprec`` (per-row nested k-means codebooks) is not BCQ-representable,
  so its dequantized weights Ŵ_b are written into a dense copy of the model for each b.

Sensitivity for Any-Precision (its paper's choice, SqueezeLLM's Fisher diagonal): for calibration
sequences x_s, F[n, k] = (1/S) Σ_s (∂ℓ(x_s)/∂W[n, k])² with ℓ the mean next-token cross-entropy of one
sequence.  Shortcut: 16 sequences of 256 tokens here (Any-Precision uses 100 C4 sequences of 512).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bcq_core.anyprec import AnyPrecision, anyprec_quantize
from bcq_core.layout import PackedBCQ, pack
from bcq_core.rtn import rtn_bcq

from .convert import DEFAULT_SKIP, linear_layers, quantize_linears
from .models import model_device


def fisher_diagonal(model: nn.Module, ids, skip=DEFAULT_SKIP, progress: bool = True) -> dict[str, np.ndarray]:
    """{layer name: float32 [N, K]} mean squared gradient of each sequence's loss (see module docstring)."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    if ids.ndim != 2 or ids.shape[1] < 2:
        raise ValueError(f"ids: must be [S, L] token ids with L >= 2, got shape {tuple(ids.shape)}")
    ids = ids.to(model_device(model))
    layers = linear_layers(model, skip)
    flags = {t: t.requires_grad for t in model.parameters()}
    for t in model.parameters():
        t.requires_grad_(False)
    for m in layers.values():
        m.weight.requires_grad_(True)
    acc = {name: torch.zeros_like(m.weight, dtype=torch.float32) for name, m in layers.items()}
    try:
        for s in tqdm(range(len(ids)), desc="fisher", unit="seq", disable=not progress, leave=False):
            model.zero_grad(set_to_none=True)
            loss = model(ids[s:s + 1], labels=ids[s:s + 1], use_cache=False).loss
            loss.backward()
            for name, m in layers.items():
                acc[name] += m.weight.grad.float() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        for t, flag in flags.items():
            t.requires_grad_(flag)
    return {name: (a / len(ids)).cpu().numpy() for name, a in acc.items()}


def rtn_layers(model: nn.Module, bits: int, group_size: int, skip=DEFAULT_SKIP,
               progress: bool = True) -> dict[str, PackedBCQ]:
    """{name: packed RTN b-bit BCQ} for every layer to convert."""
    return quantize_linears(model, lambda name, W: pack(rtn_bcq(W, bits, group_size)), group_size, skip,
                            desc=f"rtn {bits}-bit", progress=progress)


def fixed_layers(model: nn.Module, bits, group_size: int, iters: int, importance: dict | None = None,
                 skip=DEFAULT_SKIP, progress: bool = True) -> dict[str, dict]:
    """{name: {p: packed fixed-precision BCQ}}: every bit-width fitted on its own.

    importance: {name: float [K]} per-input-channel weights for the quantizer (None: plain MSE).
    """
    from bcq_core.quantize import QuantConfig, quantize_fixed

    config = QuantConfig(bits=tuple(bits), group_size=group_size, iters=iters, method="fixed")
    imp = importance or {}
    return quantize_linears(model, lambda name, W: {p: pack(q) for p, q in
                                                    quantize_fixed(W, config, importance=imp.get(name)).items()},
                            group_size, skip, desc="fixed BCQ", progress=progress)


def anybcq_layers(model: nn.Module, bits, group_size: int, iters: int, method: str, importance: dict | None = None,
                  skip=DEFAULT_SKIP, progress: bool = True) -> dict[str, PackedBCQ]:
    """{name: packed multi-precision BCQ} from ``bcq_core.quantize.quantize`` (progressive or joint)."""
    from bcq_core.quantize import QuantConfig, quantize

    config = QuantConfig(bits=tuple(bits), group_size=group_size, iters=iters, method=method)
    imp = importance or {}
    return quantize_linears(model, lambda name, W: pack(quantize(W, config, importance=imp.get(name))),
                            group_size, skip, desc=f"AnyBCQ {method}", progress=progress)


def anyprec_layers(model: nn.Module, fisher: dict[str, np.ndarray] | None, seed_bits: int, top_bits: int,
                   iters: int = 50, skip=DEFAULT_SKIP, progress: bool = True) -> dict[str, AnyPrecision]:
    """{name: AnyPrecision} seeded at seed_bits and split up to top_bits; fisher None = unweighted."""
    def quantizer(name, W):
        return anyprec_quantize(W, None if fisher is None else fisher[name], seed_bits, top_bits, iters)

    return quantize_linears(model, quantizer, 32, skip, desc=f"Any-Precision seed {seed_bits}", progress=progress)


def anyprec_bits_per_weight(layers: dict[str, AnyPrecision], b: int) -> float:
    """Stored bits per weight to serve b bits: b code bits + a 2^b-entry fp16 table per row."""
    weights = sum(q.codes.size for q in layers.values())
    return 8 * sum(q.nbytes(b) for q in layers.values()) / weights

r"""Evaluation of a (quantized) causal LM: perplexity, KL divergence to full precision, greedy text, memory.

On W held-out windows x of L tokens (``llm.data.eval_windows``), with P the full-precision model's and
Q the evaluated model's next-token distributions at each of the W (L − 1) predicted positions t:

    ppl = exp( −mean_t log Q(x_{t+1} | x_≤t) )
    KL  = mean_t Σ_v P(v | x_≤t) (log P(v | x_≤t) − log Q(v | x_≤t))       nats per token

The reference log-probabilities log P are computed once (``reference``) and kept as float16
[W, L − 1, V] (W = 8, L = 512, V = 49152: 400 MB), so every variant costs one forward pass per window.

Memory: ``memory_bytes`` counts what serving needs: BCQ planes and scales at their stored width,
every other weight (embedding, norms) in float16; one multi-precision model against one model per
precision (each with its own embedding).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .bcq_linear import BCQLinear
from .convert import bcq_layers, model_precisions
from .models import model_device

PROMPTS = (
    "The capital of France is",
    "Water is made of two elements:",
    "The theory of evolution by natural selection",
    "To bake a loaf of bread, you first",
)


@dataclass
class Reference:
    """The full-precision model's results on the evaluation windows."""

    windows: torch.Tensor        # int64 [W, L]
    logprobs: torch.Tensor       # float16 [W, L-1, V], log P of every next token
    nll: float                   # mean negative log-likelihood (nats per token)

    @property
    def ppl(self) -> float:
        return float(np.exp(self.nll))


@dataclass
class Scores:
    ppl: float
    nll: float
    kl: float | None


def _logprobs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """log softmax of the logits predicting tokens 1..L-1: float32 [B, L-1, V], on ids' device."""
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits[:, :-1].float()   # (B, L-1, V)
        return torch.log_softmax(logits, dim=-1)


def _nll_sum(logprobs: torch.Tensor, ids: torch.Tensor) -> float:
    """-Σ log-prob of the actual next tokens: logprobs [B, L-1, V], ids [B, L]."""
    return -float(logprobs.gather(-1, ids[:, 1:, None]).sum())


def reference(model: nn.Module, windows, batch: int = 1, progress: bool = True) -> Reference:
    """Run the full-precision model once over the windows and keep its log-probs (float16)."""
    windows = torch.as_tensor(np.asarray(windows), dtype=torch.long)
    chunks, nll, device = [], 0.0, model_device(model)
    for i in tqdm(range(0, len(windows), batch), desc="reference", unit="batch", disable=not progress, leave=False):
        ids = windows[i:i + batch].to(device)
        lp = _logprobs(model, ids)
        nll += _nll_sum(lp, ids)
        chunks.append(lp.to(torch.float16))
    n_tokens = windows.shape[0] * (windows.shape[1] - 1)
    return Reference(windows=windows, logprobs=torch.cat(chunks), nll=nll / n_tokens)


def score(model: nn.Module, ref: Reference, batch: int = 1, progress: bool = True, desc: str = "eval") -> Scores:
    """Perplexity on ref's windows and KL(P_fp || Q) against ref's log-probs."""
    nll, kl, device = 0.0, 0.0, model_device(model)
    windows = ref.windows
    for i in tqdm(range(0, len(windows), batch), desc=desc, unit="batch", disable=not progress, leave=False):
        ids = windows[i:i + batch].to(device)
        lq = _logprobs(model, ids)                                    # (B, L-1, V)
        nll += _nll_sum(lq, ids)
        lp = ref.logprobs[i:i + batch].to(device).float()
        kl += float((lp.exp() * (lp - lq)).sum())
    n_tokens = windows.shape[0] * (windows.shape[1] - 1)
    return Scores(ppl=float(np.exp(nll / n_tokens)), nll=nll / n_tokens, kl=kl / n_tokens)


def perplexity(model: nn.Module, windows, batch: int = 1) -> float:
    """exp(mean NLL) over windows int64 [W, L] (no reference needed)."""
    windows = torch.as_tensor(np.asarray(windows), dtype=torch.long)
    nll, device = 0.0, model_device(model)
    for i in range(0, len(windows), batch):
        ids = windows[i:i + batch].to(device)
        nll += _nll_sum(_logprobs(model, ids), ids)
    return float(np.exp(nll / (windows.shape[0] * (windows.shape[1] - 1))))


def continuations(model: nn.Module, tokenizer, prompts=PROMPTS, max_new_tokens: int = 24) -> list[str]:
    """Greedy continuation of each prompt (the new text only)."""
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(model_device(model))
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.eos_token_id)
        out.append(tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    return out


def dense_bytes(model: nn.Module, bytes_per_value: int = 2) -> int:
    """Bytes of every parameter outside BCQLinear layers (tied tensors once), at 2 bytes (float16)."""
    bcq = {id(t) for m in bcq_layers(model).values() for t in m.parameters()}
    seen, total = set(), 0
    for t in model.parameters():
        if id(t) in bcq or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * bytes_per_value
    return total


def memory_bytes(model: nn.Module) -> dict:
    """Serving memory of a converted model: multi-precision vs one model per precision.

    {"linear": {p: bytes of the BCQ layers at precision p}, "linear_all": all precisions in one model,
     "dense": float16 bytes of everything else, "multi": one model serving all, "separate": one model
     per precision, "saving": 1 - multi / separate}
    """
    precisions = model_precisions(model)  # ValueError if the model has no BCQLinear
    layers = list(bcq_layers(model).values())
    linear = {p: sum(m.nbytes(p) for m in layers) for p in precisions}
    linear_all = sum(m.nbytes() for m in layers)
    dense = dense_bytes(model)
    multi = linear_all + dense
    separate = sum(linear.values()) + dense * len(precisions)
    return {"linear": linear, "linear_all": linear_all, "dense": dense, "multi": multi, "separate": separate,
            "saving": 1 - multi / separate}


def bits_per_weight(layers: list[BCQLinear], p: int) -> float:
    """Stored bits per quantized weight at precision p (planes + scales + offsets)."""
    weights = sum(m.in_features * m.out_features for m in layers)
    return 8 * sum(m.nbytes(p) for m in layers) / weights

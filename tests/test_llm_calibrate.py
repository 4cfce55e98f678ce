"""Block-wise scale calibration on a tiny Llama: block MSE falls, codes never change, bad settings refused."""

import numpy as np
import pytest
import torch

from llm.calibrate import CalibConfig, block_inputs, calibrate, run_block
from llm.convert import bcq_layers, get_precision
from llm.models import decoder_blocks, tiny_llama
from llm_testing import two_precision_pair

torch.set_num_threads(2)


def test_block_inputs_reproduce_the_model():
    fp = tiny_llama()
    ids = torch.randint(0, 256, (3, 20))
    x, kw = block_inputs(fp, ids)
    for block in decoder_blocks(fp):
        x = run_block(block, x, kw)
    with torch.no_grad():
        ref = fp.model(ids).last_hidden_state
    torch.testing.assert_close(fp.model.norm(x), ref, rtol=1e-5, atol=1e-5)


def test_calibration_lowers_block_mse_and_keeps_codes():
    model, fp = two_precision_pair()
    planes = {n: m.planes.clone() for n, m in bcq_layers(model).items()}
    ids = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))
    stats = calibrate(model, fp, ids, CalibConfig(iters=40, n_seqs=8, seq_len=32, lr=3e-2), progress=False)
    assert [(s.block, s.p) for s in stats] == [(0, 2), (0, 3), (1, 2), (1, 3)]
    for s in stats:
        assert s.mse_after <= s.mse_before
    assert sum(s.mse_after for s in stats) < 0.9 * sum(s.mse_before for s in stats)
    assert all(torch.equal(m.planes, planes[n]) for n, m in bcq_layers(model).items())
    assert all(m._train is None and m.alpha(2).dtype == torch.float16 for m in bcq_layers(model).values())
    assert get_precision(model) == 3  # restored


def test_calibration_improves_the_model_output():
    model, fp = two_precision_pair(seed=1)
    ids = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(1))
    test = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = fp(test).logits
        before = float((model(test).logits - ref).pow(2).mean())
    calibrate(model, fp, ids, CalibConfig(iters=40, n_seqs=8, seq_len=32, lr=3e-2, precisions=(3,)), progress=False)
    with torch.no_grad():
        after = float((model(test).logits - ref).pow(2).mean())
    assert after < before


def test_alpha_gradient_is_scaled_by_one_over_g():
    from llm.calibrate import scale_gradients
    model, _ = two_precision_pair()
    lin = model.model.layers[0].mlp.down_proj
    x = torch.randn(4, lin.in_features)
    grads = []
    for factor in (1.0, 1.0 / lin.group_size):
        params = lin.train_scales(3)
        hooks = scale_gradients(params, factor)
        lin(x).pow(2).sum().backward()
        grads.append(params[0].grad.clone())
        for h in hooks:
            h.remove()
        lin.finish_scale_training()
    torch.testing.assert_close(grads[1], grads[0] / 32)


@pytest.mark.parametrize("kwargs, match", [({"iters": 0}, "iters"), ({"lr": 0.0}, "lr"), ({"mix": 1.5}, "mix"),
                                           ({"batch": 64, "n_seqs": 8}, "batch")])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CalibConfig(**kwargs)


def test_bad_inputs():
    model, fp = two_precision_pair()
    with pytest.raises(ValueError, match="not 4"):
        calibrate(model, fp, np.zeros((2, 8), np.int64), CalibConfig(precisions=(4,), n_seqs=2), progress=False)
    with pytest.raises(ValueError, match="ids"):
        calibrate(model, fp, np.zeros(8, np.int64), CalibConfig(n_seqs=2), progress=False)
    with pytest.raises(ValueError, match="no BCQLinear"):
        calibrate(fp, fp, np.zeros((2, 8), np.int64), CalibConfig(n_seqs=2), progress=False)

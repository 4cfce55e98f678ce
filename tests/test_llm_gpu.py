"""BCQLinear on CUDA goes through gpu.bcq_matmul and agrees with its own CPU path (skipped without a GPU)."""
import numpy as np
import pytest
import torch

from gpu_support import require_gpu

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def _gpu():
    require_gpu()
    if not torch.cuda.is_available():
        pytest.skip("no GPU: torch sees no CUDA device")


@pytest.mark.parametrize("M", [1, 7, 64])
@pytest.mark.parametrize("asymmetric", [False, True])
def test_cuda_forward_matches_cpu_dequantized_matmul(M, asymmetric):
    from bcq_core.bcq import BCQ
    from llm.bcq_linear import BCQLinear

    rng = np.random.default_rng(M)
    N, K, g = 192, 576, 64  # SmolLM2's k_proj shape
    signs = rng.choice(np.array([-1, 1], np.int8), size=(4, N, K))
    alpha = {p: (np.abs(rng.standard_normal((p, N, K // g))) * 0.02).astype(np.float32) for p in (2, 3, 4)}
    beta = {p: (rng.standard_normal((N, K // g)) * 0.01).astype(np.float32) for p in (2, 3, 4)} if asymmetric else None
    m = BCQLinear.from_bcq(BCQ(signs=signs, alpha=alpha, group_size=g, beta=beta), torch.randn(N))
    x = torch.randn(M, K).half()
    mc = BCQLinear.from_bcq(m.to_packed(), m.bias.data).cuda()
    for p in (2, 3, 4):
        m.set_precision(p)
        mc.set_precision(p)
        want = m(x.float())                              # float32 dequantize + matmul on the CPU
        got = mc(x.cuda()).float().cpu()                 # float16 kernel on the GPU
        assert got.dtype == torch.float32 and got.shape == (M, N)
        scale = want.abs().max()
        assert (got - want).abs().max() <= 2e-2 * scale, (p, float((got - want).abs().max()), float(scale))


def test_cuda_model_serves_every_precision():
    from bcq_core.layout import pack
    from bcq_core.rtn import rtn_bcq
    from llm.convert import precision, quantize_linears, replace_linears
    from llm.models import tiny_llama

    fp = tiny_llama()
    model = replace_linears(tiny_llama(), quantize_linears(fp, lambda n, W: pack(rtn_bcq(W, 4, 32)), 32))
    ids = torch.randint(0, 256, (1, 16))
    with torch.no_grad():
        cpu = model(ids).logits
        gpu = model.cuda()(ids.cuda()).logits.cpu()
        with precision(model, 4):
            assert torch.isfinite(gpu).all()
    assert (gpu - cpu).abs().max() <= 2e-2 * cpu.abs().max()

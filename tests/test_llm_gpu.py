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


def _count_kernel_calls(monkeypatch) -> list:
    """Wrap gpu.bcq_matmul so that every call BCQLinear makes is recorded (the name is looked up per call)."""
    import gpu

    calls, real = [], gpu.bcq_matmul

    def spy(*args, **kwargs):
        calls.append((tuple(args[0].shape), kwargs.get("tiles") is not None))
        return real(*args, **kwargs)

    monkeypatch.setattr(gpu, "bcq_matmul", spy)
    return calls


def _tiny_rtn_model():
    from bcq_core.layout import pack
    from bcq_core.rtn import rtn_bcq
    from llm.convert import quantize_linears, replace_linears
    from llm.models import tiny_llama

    fp = tiny_llama()
    return replace_linears(tiny_llama(), quantize_linears(fp, lambda n, W: pack(rtn_bcq(W, 4, 32)), 32))


def test_float16_cuda_model_serves_through_the_kernels(monkeypatch):
    from llm.convert import bcq_layers

    model = _tiny_rtn_model()
    ids = torch.randint(0, 256, (1, 16))
    calls = _count_kernel_calls(monkeypatch)
    with torch.no_grad():
        cpu = model(ids).logits
        gpu = model.half().cuda()(ids.cuda()).logits.float().cpu()
    assert len(calls) == len(bcq_layers(model))            # every BCQLinear, once
    assert torch.isfinite(gpu).all()
    assert (gpu - cpu).abs().max() <= 2e-2 * cpu.abs().max()


def test_cuda_batches_read_the_tiles_and_give_the_contracts_bytes(monkeypatch):
    """Moved to CUDA, a module of 4 planes holds one copy of them, the tiles, and every batch reads them;
    batches 1-16 give the exact contract's bytes.  With tile_on_cuda = False it keeps the row-major planes,
    makes the tiles beside them (once) and gives the same bytes at every batch, dequantize + cuBLAS included."""
    from bcq_core.bcq import BCQ
    from llm.bcq_linear import BCQLinear
    from reference.exact_mma import exact_mma_gemm

    rng = np.random.default_rng(0)
    N, K, g = 200, 512, 128  # N not a multiple of the 16-row tile
    signs = rng.choice(np.array([-1, 1], np.int8), size=(4, N, K))
    alpha = {p: (np.abs(rng.standard_normal((p, N, K // g))) * 0.02).astype(np.float32) for p in (2, 3, 4)}
    m = BCQLinear.from_bcq(BCQ(signs=signs, alpha=alpha, group_size=g))
    m.tile_on_cuda = False
    m = m.cuda()
    assert not m.tiled and m.planes.shape == (4, N, K // 32)
    t = BCQLinear.from_bcq(m.to_packed()).cuda()
    assert t.tiled and t.tiles().data_ptr() == t.planes.data_ptr()  # the tiles are the planes buffer: one copy
    assert not any(b.dim() == 3 and b.dtype == torch.int32 for b in t.buffers())
    assert torch.equal(t.state_dict()["planes"], m.planes)  # checkpoints stay row-major
    calls = _count_kernel_calls(monkeypatch)
    planes = m.to_packed().planes
    with torch.no_grad():
        for M in (1, 2, 3, 16, 40):
            x = torch.randn(M, K, device="cuda").half()
            for p in (2, 3, 4):
                m.set_precision(p)
                t.set_precision(p)
                got = m(x)
                if M <= 16:
                    want = exact_mma_gemm(x.cpu().numpy(), planes[:p], m.alpha(p).cpu().numpy(), group_size=g)
                    assert np.array_equal(got.cpu().numpy().view(np.uint16), want.view(np.uint16)), (M, p)
                assert torch.equal(t(x).view(torch.int16), got.view(torch.int16)), (M, p)
    assert len(calls) == 30 and all(with_tiles for _, with_tiles in calls)
    assert m.tiles() is m.tiles()                           # made once, kept
    m.clear_cache()
    assert torch.equal(m.tiles().view(torch.int32), t.planes)
    assert torch.equal(t.cpu().dequantize(3), m.cpu().dequantize(3))  # back on the CPU, untiled where needed


def test_tile_layout_frees_the_row_major_planes_on_the_gpu():
    """A CUDA module that has made its tiles holds two copies of the planes; use_tile_layout leaves one."""
    from bcq_core.bcq import BCQ
    from llm.bcq_linear import BCQLinear

    rng = np.random.default_rng(2)
    N, K, g = 1024, 2048, 128
    signs = rng.choice(np.array([-1, 1], np.int8), size=(4, N, K))
    alpha = {p: (np.abs(rng.standard_normal((p, N, K // g))) * 0.02).astype(np.float32) for p in (2, 4)}
    import cupy

    def in_use():  # gpu.tile_planes allocates from CuPy's pool, tile_planes_torch from torch's
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated() + cupy.get_default_memory_pool().used_bytes()

    base = in_use()
    m = BCQLinear.from_bcq(BCQ(signs=signs, alpha=alpha, group_size=g))
    m.tile_on_cuda = False  # the default tiles on arrival; this measures what that saves
    m = m.cuda()
    m.tiles()
    two = in_use() - base
    m.use_tile_layout()
    one = in_use() - base
    plane_bytes = 4 * N * K // 8  # 1 MiB, the row-major copy (N, K multiples of a tile: the tiles are as large)
    assert two - one == plane_bytes, (two, one)
    before = in_use()
    d = BCQLinear.from_bcq(BCQ(signs=signs, alpha=alpha, group_size=g)).cuda()  # the default: tiles on arrival
    assert d.tiled and in_use() - before == one, (in_use() - before, one)


def test_more_than_four_planes_are_served_row_major_without_tiles(monkeypatch):
    """p > 4 has no tensor-core kernel: the module hands bcq_matmul its row-major planes and makes no tiles."""
    from bcq_core.bcq import BCQ
    from llm.bcq_linear import BCQLinear
    from reference.lut_gemv import lut_gemv

    rng = np.random.default_rng(1)
    N, K, g = 96, 256, 64
    signs = rng.choice(np.array([-1, 1], np.int8), size=(5, N, K))
    alpha = {p: (np.abs(rng.standard_normal((p, N, K // g))) * 0.02).astype(np.float32) for p in (4, 5)}
    m = BCQLinear.from_bcq(BCQ(signs=signs, alpha=alpha, group_size=g)).cuda()
    calls = _count_kernel_calls(monkeypatch)
    x = torch.randn(2, K, device="cuda").half()
    with torch.no_grad():
        m.set_precision(5)
        got = m(x)
    assert calls == [((2, K), False)] and m._tile_cache is None and not m.tiled
    want = lut_gemv(x.cpu().numpy(), m.to_packed().planes, m.alpha(5).cpu().numpy(), group_size=g)
    assert np.array_equal(got.cpu().numpy().view(np.uint16), want.view(np.uint16))


def test_float32_cuda_model_computes_in_float32_like_the_cpu(monkeypatch):
    model = _tiny_rtn_model()
    ids = torch.randint(0, 256, (2, 16))
    calls = _count_kernel_calls(monkeypatch)
    with torch.no_grad():
        cpu = model(ids).logits
        gpu = model.cuda()(ids.cuda()).logits.cpu()
    assert calls == []                                      # float32 asks for the dense float32 path
    assert (gpu - cpu).abs().max() <= 1e-4 * cpu.abs().max()


def test_demo_pipeline_on_cuda_matches_the_cpu(tmp_path):
    """Calibration, end-to-end training and scoring on the GPU give the CPU's numbers (float32 both)."""
    from llm.calibrate import CalibConfig
    from llm.data import Corpus
    from llm.e2e import E2EConfig
    from llm.models import ByteTokenizer, tiny_llama
    from llm.pipeline import DemoConfig, run_demo

    rng = np.random.default_rng(0)
    corpus = Corpus(rng.integers(0, 256, 4000), rng.integers(0, 256, 2000), ("a",), ("b",))
    results = {}
    for device in ("cpu", "cuda"):
        config = DemoConfig(methods=("progressive+cal+e2e",), group_size=32, windows=2, window_len=48, iters=3,
                            max_new_tokens=4, calib=CalibConfig(iters=4, n_seqs=4, seq_len=32),
                            e2e=E2EConfig(steps=3, n_seqs=4, seq_len=32, held=2), device=device)
        results[device] = run_demo(config, tmp_path / device, fp_model=tiny_llama(), tokenizer=ByteTokenizer(),
                                   corpus=corpus, progress=False, log=lambda *a: None)
    cpu, gpu = results["cpu"], results["cuda"]
    assert gpu["device"] == "cuda" and cpu["device"] == "cpu"
    assert gpu["fp_ppl"] == pytest.approx(cpu["fp_ppl"], rel=1e-5)
    for key in ("progressive+cal", "progressive+cal+e2e"):
        for p, v in cpu["methods"][key]["ppl"].items():
            assert gpu["methods"][key]["ppl"][p] == pytest.approx(v, rel=2e-3), (key, p)


def _alphas(model):
    return torch.cat([t.float().flatten().cpu() for n, t in model.state_dict().items() if "alpha" in n])


def _eager_then_graphed(train):
    """{graphed: (losses of each trained precision, all scales)} of train(model, fp, ids, graphed) on fresh
    copies of the tiny two-precision pair, eager first."""
    from llm_testing import two_precision_pair

    ids = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))
    out = {}
    for graphed in (False, True):
        model, fp = two_precision_pair()
        model, fp = model.cuda(), fp.cuda()
        stats = train(model, fp, ids, graphed)
        out[graphed] = ([s.losses for s in stats], _alphas(model))
    return out


def test_calibration_replayed_from_a_cuda_graph_trains_like_eager_steps():
    """The graphed step is the eager step: the same losses and scales (up to Adam's capturable form)."""
    from llm.calibrate import CalibConfig, calibrate
    from llm_testing import two_precision_pair

    out = _eager_then_graphed(lambda model, fp, ids, graphed: calibrate(
        model, fp, ids, CalibConfig(iters=40, n_seqs=8, seq_len=32, lr=3e-2, cuda_graph=graphed), progress=False))
    (eager_losses, eager_alpha), (graph_losses, graph_alpha) = out[False], out[True]
    assert not torch.equal(eager_alpha, _alphas(two_precision_pair()[0]))  # training moved the scales
    for e, g in zip(eager_losses, graph_losses):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(graph_alpha, eager_alpha, rtol=2e-3, atol=1e-6)  # float16 scales: one ulp


def test_end_to_end_training_replayed_from_a_cuda_graph_trains_like_eager_steps():
    from llm.e2e import E2EConfig, train_e2e

    out = _eager_then_graphed(lambda model, fp, ids, graphed: train_e2e(
        model, fp, ids, E2EConfig(steps=12, n_seqs=8, seq_len=32, batch=2, held=2, lr=1e-2, cuda_graph=graphed),
        progress=False))
    for e, g in zip(out[False][0], out[True][0]):   # KL of near-equal logits: float32 cancellation, so 1e-3
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-9)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=2e-3, atol=1e-6)

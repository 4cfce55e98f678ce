"""gpu/ kernels against reference/, compared as bytes (uint16 views).  Skipped without a GPU."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gpu_support import require_gpu

cupy = require_gpu()

import gpu  # noqa: E402
from bcq_core.random_problems import VALUE_KINDS, random_problem  # noqa: E402
from reference.bitplane import dequant_matmul  # noqa: E402
from reference.dequant import dequantize_fp16  # noqa: E402
from reference.lut_gemv import lut_gemv as ref_lut_gemv  # noqa: E402

pytestmark = pytest.mark.gpu
# BCQ_GPU_EXAMPLES lowers the example count, e.g. under compute-sanitizer
EXAMPLES = int(os.environ.get("BCQ_GPU_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


def run_gpu(x, planes, alpha, beta, g):
    dev = [None if a is None else cupy.asarray(a) for a in (x, planes, alpha, beta)]
    return cupy.asnumpy(gpu.lut_gemv(*dev, group_size=g))


def assert_same_bytes(got, want):
    assert got.dtype == want.dtype == np.float16 and got.shape == want.shape
    diff = got.view(np.uint16) != want.view(np.uint16)
    assert not diff.any(), f"{int(diff.sum())} of {diff.size} outputs differ; first at {np.argwhere(diff)[0]}"


@SETTINGS
@given(M=st.integers(1, 32), N=st.integers(1, 300), g=st.sampled_from([32, 64, 128, 256]),
       G=st.integers(1, 12), p=st.integers(1, 8), with_beta=st.booleans(),
       kind=st.sampled_from(VALUE_KINDS), seed=st.integers(0, 2 ** 32 - 1))
def test_lut_gemv_matches_reference_bytes(M, N, g, G, p, with_beta, kind, seed):
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), M, N, g * G, p, g,
                                            with_beta=with_beta, kind=kind)
    assert_same_bytes(run_gpu(x, planes, alpha, beta, g), ref_lut_gemv(x, planes, alpha, beta, group_size=g))


@settings(max_examples=max(EXAMPLES // 6, 2), deadline=None, suppress_health_check=list(HealthCheck))
@given(M=st.sampled_from([1, 2, 3, 5, 8, 16, 32]), N=st.integers(1, 70), KW=st.integers(257, 1400),
       p=st.integers(1, 4), seed=st.integers(0, 2 ** 32 - 1))
def test_lut_gemv_several_splits(M, N, KW, p, seed):
    """K past one split (8192 inputs): the split-K epilogue and its counters."""
    g = 32
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), M, N, 32 * KW, p, g, with_beta=True)
    assert_same_bytes(run_gpu(x, planes, alpha, beta, g), ref_lut_gemv(x, planes, alpha, beta, group_size=g))


@pytest.mark.parametrize("N,K", [(4096, 4096), (6144, 4096), (4096, 14336), (1536, 576), (576, 1536)])
@pytest.mark.parametrize("p", [2, 3, 4])
def test_lut_gemv_real_layer_shapes(N, K, p):
    g = 64 if K % 128 else 128
    x, planes, alpha, _ = random_problem(np.random.default_rng(N + K + p), 1, N, K, p, g)
    assert_same_bytes(run_gpu(x, planes, alpha, None, g), ref_lut_gemv(x, planes, alpha, group_size=g))


@SETTINGS
@given(N=st.integers(1, 200), g=st.sampled_from([32, 64, 96, 128, 160, 256]), G=st.integers(1, 10),
       p=st.integers(1, 8), with_beta=st.booleans(), from_tiles=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_dequantize_matches_reference_bytes(N, g, G, p, with_beta, from_tiles, seed):
    """From the row-major planes or from their tile layout (N, K not multiples of a tile included; the
    kernel's divisors K/32 and g/32 powers of two or not)."""
    _, planes, alpha, beta = random_problem(np.random.default_rng(seed), 1, N, g * G, p, g, with_beta=with_beta)
    dp, da, db = (None if a is None else cupy.asarray(a) for a in (planes, alpha, beta))
    K, sentinel = g * G, 0x7E01  # a NaN no output can be
    buf = cupy.full((N + 1, K), sentinel, dtype=cupy.uint16).view(cupy.float16)
    if from_tiles:
        got = gpu.dequantize(None, da, db, group_size=g, out=buf[:N], tiles=gpu.tile_planes(dp))
    else:
        got = gpu.dequantize(dp, da, db, group_size=g, out=buf[:N])
    assert_same_bytes(cupy.asnumpy(got), dequantize_fp16(planes, alpha, beta, group_size=g))
    assert (cupy.asnumpy(buf[N]).view(np.uint16) == sentinel).all(), "dequantize wrote past W's last row"


def test_dequantize_refuses_an_unaligned_out():
    _, planes, alpha, _ = random_problem(np.random.default_rng(5), 1, 8, 256, 2, 128)
    unaligned = cupy.empty(8 * 256 + 8, cupy.float16)[8 - 1:-1].reshape(8, 256)
    with pytest.raises(ValueError, match="out: must start on a 16-byte boundary"):
        gpu.dequantize(cupy.asarray(planes), cupy.asarray(alpha), group_size=128, out=unaligned)


def test_dequantize_refuses_more_words_than_its_31_bit_index(monkeypatch):
    """8 ceil(N/16) K/32 >= 2^31 threads would need 16 GB of planes; the bound is lowered to test the check."""
    _, planes, alpha, _ = random_problem(np.random.default_rng(6), 1, 8, 256, 2, 128)
    monkeypatch.setattr(gpu.kernels, "MAX_DIVIDEND", 8 * 256 // 32 - 1)
    with pytest.raises(ValueError, match=r"planes: 8\*ceil\(N/16\)\*K/32 must be below 2\^31"):
        gpu.dequantize(cupy.asarray(planes), cupy.asarray(alpha), group_size=128)


def test_dequantize_refuses_both_layouts_or_neither():
    _, planes, alpha, _ = random_problem(np.random.default_rng(4), 1, 40, 512, 2, 128)
    dp, da = cupy.asarray(planes), cupy.asarray(alpha)
    with pytest.raises(ValueError, match="planes, tiles: give exactly one"):
        gpu.dequantize(dp, da, group_size=128, tiles=gpu.tile_planes(dp))
    with pytest.raises(ValueError, match="planes, tiles: give exactly one"):
        gpu.dequantize(None, da, group_size=128)
    with pytest.raises(ValueError, match=r"tiles: must be the planes in the tile layout, uint32 \(2, 3, 2, 128\)"):
        gpu.dequantize(None, da, group_size=128, tiles=gpu.tile_planes(dp)[:, :2])


def test_identity_activations_give_back_dequantized_weights():
    N, K, g, p = 300, 512, 128, 4
    _, planes, alpha, beta = random_problem(np.random.default_rng(7), 1, N, K, p, g, with_beta=True)
    dev = [cupy.asarray(a) for a in (planes, alpha, beta)]
    Wq = cupy.asnumpy(gpu.dequantize(*dev, group_size=g))
    for k0 in range(0, K, 32):
        x = np.zeros((32, K), np.float16)
        x[np.arange(32), k0 + np.arange(32)] = 1
        y = cupy.asnumpy(gpu.lut_gemv(cupy.asarray(x), *dev, group_size=g))
        got, want = y.view(np.uint16), Wq[:, k0:k0 + 32].T.copy().view(np.uint16)
        assert ((got == want) | ((got | want) == 0x8000)).all()


def test_deterministic_and_graph_capturable():
    x, planes, alpha, beta = random_problem(np.random.default_rng(3), 4, 1000, 20480, 3, 128, with_beta=True)
    dev = [cupy.asarray(a) for a in (x, planes, alpha, beta)]
    first = gpu.lut_gemv(*dev, group_size=128)
    runs = [cupy.asnumpy(gpu.lut_gemv(*dev, group_size=128)) for _ in range(5)]
    assert all((r.view(np.uint16) == cupy.asnumpy(first).view(np.uint16)).all() for r in runs)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        out = cupy.empty_like(first)
        gpu.lut_gemv(*dev, group_size=128, out=out)  # warm-up on this stream (scratch buffers)
        stream.begin_capture()
        gpu.lut_gemv(*dev, group_size=128, out=out)
        graph = stream.end_capture()
        out.fill(0)
        for _ in range(3):
            graph.launch(stream)
        stream.synchronize()
    assert (cupy.asnumpy(out).view(np.uint16) == runs[0].view(np.uint16)).all()


def test_torch_tensors_on_a_torch_stream():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no GPU: torch was built without CUDA")
    x, planes, alpha, _ = random_problem(np.random.default_rng(5), 2, 64, 1024, 2, 128)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        tx = torch.from_numpy(x).cuda()
        tp = torch.from_numpy(planes.view(np.int32)).cuda().view(torch.uint32)
        ta = torch.from_numpy(alpha).cuda()
        y = gpu.lut_gemv(tx, tp, ta, group_size=128)
    s.synchronize()
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float16
    assert_same_bytes(y.cpu().numpy(), ref_lut_gemv(x, planes, alpha, group_size=128))


def test_bcq_matmul_large_batch_uses_dequantize_and_cublas():
    x, planes, alpha, beta = random_problem(np.random.default_rng(9), 64, 256, 1024, 3, 128, with_beta=True)
    dev = [cupy.asarray(a) for a in (x, planes, alpha, beta)]
    y = cupy.asnumpy(gpu.bcq_matmul(*dev, group_size=128)).astype(np.float64)
    r = dequant_matmul(x, planes, alpha, beta, group_size=128)
    assert np.linalg.norm(y - r) / np.linalg.norm(r) < 2e-3


def test_bad_arguments_raise_before_launch():
    x, planes, alpha, _ = random_problem(np.random.default_rng(0), 2, 16, 256, 2, 128)
    dx, dp, da = cupy.asarray(x), cupy.asarray(planes), cupy.asarray(alpha)
    with pytest.raises(ValueError, match="^x:"):
        gpu.lut_gemv(dx.astype(cupy.float32), dp, da, group_size=128)
    with pytest.raises(ValueError, match="^group_size:"):
        gpu.lut_gemv(dx, dp, da, group_size=96)
    with pytest.raises(ValueError, match="^alpha:"):
        gpu.lut_gemv(dx, dp, da[:1], group_size=128)
    with pytest.raises(ValueError, match="^x: must be C-contiguous|^x:"):
        gpu.lut_gemv(cupy.asfortranarray(cupy.zeros((2, 256), cupy.float16)), dp, da, group_size=128)
    with pytest.raises(TypeError, match="^x:"):
        gpu.lut_gemv(x, dp, da, group_size=128)  # a host array
    with pytest.raises(ValueError, match="batch 1..32"):
        gpu.lut_gemv(cupy.zeros((33, 256), cupy.float16), dp, da, group_size=128)


# --- the exact tensor-core path (gpu/mma_gemm.cu, reference/exact_mma.py) ---------------------
from reference.exact_mma import SPLIT_CHOICES, contract_split, exact_mma_gemm  # noqa: E402


@SETTINGS
@given(M=st.integers(1, 16), N=st.integers(1, 300), g=st.sampled_from([32, 64, 128, 256]),
       G=st.integers(1, 12), p=st.integers(1, 8), with_beta=st.booleans(),
       kind=st.sampled_from(VALUE_KINDS), seed=st.integers(0, 2 ** 32 - 1))
def test_mma_gemm_matches_reference_bytes(M, N, g, G, p, with_beta, kind, seed):
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), M, N, g * G, p, g,
                                            with_beta=with_beta, kind=kind)
    dev = [None if a is None else cupy.asarray(a) for a in (x, planes, alpha, beta)]
    got = cupy.asnumpy(gpu.mma_gemm(*dev, group_size=g))
    assert_same_bytes(got, exact_mma_gemm(x, planes, alpha, beta, group_size=g))


@settings(max_examples=max(EXAMPLES // 6, 2), deadline=None, suppress_health_check=list(HealthCheck))
@given(M=st.sampled_from([1, 3, 8, 9, 16]), N=st.integers(1, 200), G=st.integers(65, 300),
       p=st.integers(1, 4), split=st.sampled_from(SPLIT_CHOICES), seed=st.integers(0, 2 ** 32 - 1))
def test_mma_gemm_several_splits(M, N, G, p, split, seed):
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), M, N, 128 * G, p, 128, with_beta=True)
    dev = [cupy.asarray(a) for a in (x, planes, alpha, beta)]
    assert_same_bytes(cupy.asnumpy(gpu.mma_gemm(*dev, group_size=128, split=split)),
                      exact_mma_gemm(x, planes, alpha, beta, group_size=128, split=split))


def test_mma_gemm_rows_do_not_depend_on_the_batch():
    x, planes, alpha, _ = random_problem(np.random.default_rng(11), 16, 333, 4096, 3, 128)
    dev = [cupy.asarray(a) for a in (planes, alpha)]
    full = cupy.asnumpy(gpu.mma_gemm(cupy.asarray(x), *dev, group_size=128))
    for M in (1, 5, 8):
        part = cupy.asnumpy(gpu.mma_gemm(cupy.asarray(x[:M]), *dev, group_size=128))
        assert (part.view(np.uint16) == full[:M].view(np.uint16)).all()


def test_mma_gemm_close_to_float64():
    x, planes, alpha, beta = random_problem(np.random.default_rng(12), 8, 512, 4096, 4, 128, with_beta=True)
    dev = [cupy.asarray(a) for a in (x, planes, alpha, beta)]
    y = cupy.asnumpy(gpu.mma_gemm(*dev, group_size=128)).astype(np.float64)
    r = dequant_matmul(x, planes, alpha, beta, group_size=128)
    assert np.linalg.norm(y - r) / np.linalg.norm(r) < 1e-3


# --- the 1-bit tensor-core path (gpu/bmma_gemv.cu): the same contract, the same bytes ------------
from bcq_core.layout import tile_planes  # noqa: E402
from gpu.kernels import IMMA_INSTANCES, bmma_parts_choices, bmma_supports, imma_mode, imma_tiles  # noqa: E402


def tiled(dev):
    """[x, planes, alpha, beta] on the GPU -> the same with the planes in the tile layout (gpu.tile_planes)."""
    return [dev[0], gpu.tile_planes(dev[1])] + list(dev[2:])


@SETTINGS
@given(N=st.integers(1, 300), g=st.sampled_from([32, 64, 128, 256]), G=st.integers(1, 12),
       p=st.integers(1, 4), with_beta=st.booleans(), kind=st.sampled_from(VALUE_KINDS),
       data=st.data(), seed=st.integers(0, 2 ** 32 - 1))
def test_bmma_gemv_matches_reference_bytes(N, g, G, p, with_beta, kind, data, seed):
    M = data.draw(st.sampled_from([m for m in (1, 2, 3, 4, 5, 7, 8) if bmma_supports(m, p, g)]))
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), M, N, g * G, p, g,
                                            with_beta=with_beta, kind=kind)
    dev = tiled([None if a is None else cupy.asarray(a) for a in (x, planes, alpha, beta)])
    assert (cupy.asnumpy(dev[1]) == tile_planes(planes)).all()  # the GPU tiling is the layout's
    got = cupy.asnumpy(gpu.bmma_gemv(*dev, group_size=g))
    assert_same_bytes(got, exact_mma_gemm(x, planes, alpha, beta, group_size=g))


@settings(max_examples=max(EXAMPLES // 6, 2), deadline=None, suppress_health_check=list(HealthCheck))
@given(M=st.sampled_from([1, 2, 3, 4]), N=st.integers(1, 200), G=st.integers(65, 300),
       p=st.integers(1, 4), split=st.sampled_from(SPLIT_CHOICES), seed=st.integers(0, 2 ** 32 - 1))
def test_bmma_gemv_several_splits(M, N, G, p, split, seed):
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), M, N, 128 * G, p, 128, with_beta=True)
    dev = tiled([cupy.asarray(a) for a in (x, planes, alpha, beta)])
    assert_same_bytes(cupy.asnumpy(gpu.bmma_gemv(*dev, group_size=128, split=split)),
                      exact_mma_gemm(x, planes, alpha, beta, group_size=128, split=split))


@settings(max_examples=max(EXAMPLES // 3, 2), deadline=None, suppress_health_check=list(HealthCheck))
@given(N=st.integers(1, 200), g=st.sampled_from([128, 256]), G=st.integers(1, 160), p=st.integers(1, 4),
       split=st.sampled_from(SPLIT_CHOICES), kind=st.sampled_from(VALUE_KINDS), data=st.data(),
       seed=st.integers(0, 2 ** 32 - 1))
def test_bmma_gemv_with_parts_matches_reference_bytes(N, g, G, p, split, kind, data, seed):
    """Warps sharing a split's steps (parts) keep the contract's order: the reference's bytes for every
    parts, including splits of fewer steps than parts (some warps then have none)."""
    M = data.draw(st.sampled_from([m for m in (1, 2) if len(bmma_parts_choices(256 // g, m)) > 1]))
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), M, N, g * G, p, g, with_beta=True, kind=kind)
    dev = tiled([cupy.asarray(a) for a in (x, planes, alpha, beta)])
    want = exact_mma_gemm(x, planes, alpha, beta, group_size=g, split=split)
    for parts in bmma_parts_choices(256 // g, M):
        assert_same_bytes(cupy.asnumpy(gpu.bmma_gemv(*dev, group_size=g, split=split, parts=parts)), want)


@settings(max_examples=max(EXAMPLES // 3, 2), deadline=None, suppress_health_check=list(HealthCheck))
@given(N=st.integers(1, 300), g=st.sampled_from([128, 256]), G=st.integers(1, 160), p=st.integers(1, 2),
       with_beta=st.booleans(), split=st.sampled_from(SPLIT_CHOICES), kind=st.sampled_from(VALUE_KINDS),
       seed=st.integers(0, 2 ** 32 - 1))
def test_bmma_gemv_two_tiles_per_warp_matches_reference_bytes(N, g, G, p, with_beta, split, kind, seed):
    """A warp walking two 16-row tiles side by side keeps each row's contract order, alone on its split or
    sharing it with a second part: the reference's bytes, for N that leave the second tile, or a whole warp,
    past the last row, and splits of fewer steps than parts."""
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), 1, N, g * G, p, g, with_beta=with_beta,
                                            kind=kind)
    dev = tiled([None if a is None else cupy.asarray(a) for a in (x, planes, alpha, beta)])
    want = exact_mma_gemm(x, planes, alpha, beta, group_size=g, split=split)
    for parts in bmma_parts_choices(256 // g, 1):
        for tiles_per_warp in (2, 1):
            got = gpu.bmma_gemv(*dev, group_size=g, split=split, parts=parts, tiles_per_warp=tiles_per_warp)
            assert_same_bytes(cupy.asnumpy(got), want)


@pytest.mark.parametrize("N,K,g", [(4096, 4096, 128), (1536, 576, 64), (576, 1536, 64), (8192, 28672, 128)])
def test_bmma_gemv_equals_mma_gemm_on_real_shapes(N, K, g):
    """Two kernels, one contract: the 1-bit and the fp16 tensor-core paths give the same bytes."""
    x, planes, alpha, _ = random_problem(np.random.default_rng(N + K), 1, N, K, 3, g)
    dev = [cupy.asarray(a) for a in (x, planes, alpha)]
    assert_same_bytes(cupy.asnumpy(gpu.bmma_gemv(*tiled(dev), group_size=g)),
                      cupy.asnumpy(gpu.mma_gemm(*dev, group_size=g)))


def test_bmma_gemv_dependent_launch_gives_the_plain_launchs_bytes(monkeypatch):
    """The overlapped launch (gpu/launch.py) only moves the kernel's start: eager, replayed from a CUDA
    graph and launched in plain stream order, the bytes are the same, call after call."""
    from gpu import launch
    if int(cupy.cuda.Device().compute_capability) >= 90:
        assert launch._can_overlap(cupy.cuda.Device().id)  # so this test runs the overlapped launch
    from benchmarks.launch_repeat import SHAPE  # the problem benchmarks/launch_repeat.py repeats
    x, planes, alpha, beta = random_problem(np.random.default_rng(11), *SHAPE, with_beta=True)
    x, tiles, alpha, beta = tiled([cupy.asarray(a) for a in (x, planes, alpha, beta)])
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        monkeypatch.setattr(launch, "OVERLAP", False)
        plain = cupy.asnumpy(gpu.bmma_gemv(x, tiles, alpha, beta, group_size=128))
        monkeypatch.setattr(launch, "OVERLAP", True)
        eager = [cupy.asnumpy(gpu.bmma_gemv(x, tiles, alpha, beta, group_size=128)) for _ in range(3)]
        out = cupy.empty(plain.shape, dtype=cupy.float16)
        stream.begin_capture()
        for _ in range(4):  # each call's encoder waits for the previous call's kernel
            gpu.bmma_gemv(x, tiles, alpha, beta, group_size=128, out=out)
        graph = stream.end_capture()
        out.fill(0)
        graph.launch(stream)
        stream.synchronize()
    for y in eager + [cupy.asnumpy(out)]:
        assert_same_bytes(y, plain)


def test_bmma_gemv_refuses_what_it_does_not_take():
    x, planes, alpha, _ = random_problem(np.random.default_rng(0), 8, 64, 1024, 2, 128)
    x, planes, alpha = cupy.asarray(x), cupy.asarray(planes), cupy.asarray(alpha)
    tiles = gpu.tile_planes(planes)
    with pytest.raises(ValueError, match="bmma_gemv: takes"):
        gpu.bmma_gemv(x, tiles, alpha, group_size=128)  # batch bucket 8 x 2 groups per step > 8
    with pytest.raises(ValueError, match=r"tiles: must be the planes in the tile layout, uint32 \(2, 4, 4, 128\)"):
        gpu.bmma_gemv(x[:1], planes, alpha, group_size=128)  # row-major planes
    with pytest.raises(ValueError, match="tiles: must be the planes in the tile layout"):
        gpu.bmma_gemv(x[:1], tiles[:1], alpha, group_size=128)  # one plane for a 2-plane scale set
    with pytest.raises(ValueError, match="planes: must be uint32"):
        gpu.tile_planes(planes.view(cupy.int32))
    with pytest.raises(ValueError, match=r"parts: bmma_gemv takes \(1, 2\)"):
        gpu.bmma_gemv(x[:1], tiles, alpha, group_size=128, parts=3)
    with pytest.raises(ValueError, match=r"parts: bmma_gemv takes \(1,\)"):
        gpu.bmma_gemv(x[:2], tiles, alpha, group_size=128, parts=2)  # the batch-2 variant at g = 128
    with pytest.raises(ValueError, match=r"tiles_per_warp: .* 2 only up to 2 planes; got 2 with p=3"):
        gpu.bmma_gemv(x[:1], gpu.tile_planes(cupy.concatenate([planes, planes[:1]])),
                      cupy.concatenate([alpha, alpha[:1]]), group_size=128, tiles_per_warp=2)
    with pytest.raises(ValueError, match=r"tiles_per_warp: bmma_gemv takes \(1,\) at g=128, batch bucket 2"):
        gpu.bmma_gemv(x[:2], tiles, alpha, group_size=128, tiles_per_warp=2)
    with pytest.raises(ValueError, match=r"tiles_per_warp: bmma_gemv takes \(1,\) at g=64, batch bucket 1"):
        gpu.bmma_gemv(x[:1], tiles, cupy.concatenate([alpha, alpha], axis=2), group_size=64, tiles_per_warp=2)


# --- the int8 tensor-core path (gpu/imma_gemm.cu): the same contract, the same bytes -------------
@SETTINGS
@given(M=st.integers(1, 16), N=st.integers(1, 300), g=st.sampled_from([32, 64, 96, 128, 192, 256]),
       G=st.integers(1, 12), p=st.integers(1, 4), with_beta=st.booleans(),
       kind=st.sampled_from(VALUE_KINDS), seed=st.integers(0, 2 ** 32 - 1))
def test_imma_gemm_matches_reference_bytes(M, N, g, G, p, with_beta, kind, seed):
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), M, N, g * G, p, g,
                                            with_beta=with_beta, kind=kind)
    dev = tiled([None if a is None else cupy.asarray(a) for a in (x, planes, alpha, beta)])
    got = cupy.asnumpy(gpu.imma_gemm(*dev, group_size=g))
    assert_same_bytes(got, exact_mma_gemm(x, planes, alpha, beta, group_size=g))


@settings(max_examples=max(EXAMPLES // 6, 2), deadline=None, suppress_health_check=list(HealthCheck))
@given(M=st.sampled_from([1, 3, 8, 9, 16]), N=st.integers(1, 200), g=st.sampled_from([96, 128]),
       G=st.integers(65, 300), p=st.integers(1, 4), split=st.sampled_from(SPLIT_CHOICES),
       seed=st.integers(0, 2 ** 32 - 1))
def test_imma_gemm_several_splits(M, N, g, G, p, split, seed):
    """K past one split; at g = 96 a split (85 groups, 255 words at 8192) does not start on a 4-word step."""
    x, planes, alpha, beta = random_problem(np.random.default_rng(seed), M, N, g * G, p, g, with_beta=True)
    dev = tiled([cupy.asarray(a) for a in (x, planes, alpha, beta)])
    assert_same_bytes(cupy.asnumpy(gpu.imma_gemm(*dev, group_size=g, split=split)),
                      exact_mma_gemm(x, planes, alpha, beta, group_size=g, split=split))


@pytest.mark.parametrize("g", [64, 128, 192])
@pytest.mark.parametrize("split", [4096, 8192])
def test_imma_gemm_both_ring_depths_match_reference_bytes(g, split):
    """At p = 3 with one batch tile the ring is a slot shorter on splits longer than 4096 inputs (g <= 128;
    imma_gemm.cu kImmaMaxStages): both depths, in every mode, give the reference's bytes."""
    x, planes, alpha, beta = random_problem(np.random.default_rng(g + split), 8, 200, 12288, 3, g,
                                            with_beta=True, kind="mixed")
    assert (contract_split(200, 12288, g, split) > 4096) == (split == 8192)
    dev = tiled([cupy.asarray(a) for a in (x, planes, alpha, beta)])
    assert_same_bytes(cupy.asnumpy(gpu.imma_gemm(*dev, group_size=g, split=split)),
                      exact_mma_gemm(x, planes, alpha, beta, group_size=g, split=split))


@pytest.mark.parametrize("kernel", ["imma_gemm", "mma_gemm"])
def test_exact_kernels_count_splits_in_whole_groups(kernel):
    """g = 96: 256 groups make 4 splits of 85 groups, though K = 24576 is only 3 x 8192 inputs."""
    x, planes, alpha, beta = random_problem(np.random.default_rng(5), 3, 40, 96 * 256, 2, 96, with_beta=True)
    dev = [cupy.asarray(a) for a in (x, planes, alpha, beta)]
    if kernel in gpu.kernels.TILED_KERNELS:
        dev = tiled(dev)
    assert_same_bytes(cupy.asnumpy(getattr(gpu, kernel)(*dev, group_size=96, split=8192)),
                      exact_mma_gemm(x, planes, alpha, beta, group_size=96, split=8192))


@pytest.mark.parametrize("kernel", ["mma_gemm", "bmma_gemv", "imma_gemm"])
def test_exact_kernels_refuse_a_split_the_contract_lacks(kernel):
    x, planes, alpha, _ = random_problem(np.random.default_rng(0), 1, 64, 1024, 2, 128)
    dev = [cupy.asarray(a) for a in (x, planes, alpha)]
    if kernel in gpu.kernels.TILED_KERNELS:
        dev = tiled(dev)
    with pytest.raises(ValueError, match="split: must be one of"):
        getattr(gpu, kernel)(*dev, group_size=128, split=3000)


@pytest.mark.parametrize("N,K,g", [(4096, 4096, 128), (1536, 576, 64), (576, 1536, 64), (8192, 28672, 128)])
@pytest.mark.parametrize("M", [1, 8, 16])
def test_imma_gemm_equals_mma_gemm_on_real_shapes(N, K, g, M):
    x, planes, alpha, _ = random_problem(np.random.default_rng(N + K + M), M, N, K, 4, g)
    dev = [cupy.asarray(a) for a in (x, planes, alpha)]
    assert_same_bytes(cupy.asnumpy(gpu.imma_gemm(*tiled(dev), group_size=g)),
                      cupy.asnumpy(gpu.mma_gemm(*dev, group_size=g)))


@pytest.mark.parametrize("p,mode", sorted({(p, m) for p, m, t in IMMA_INSTANCES if t == 2}))
def test_imma_gemm_16_rows_in_one_launch_matches_reference_bytes(p, mode):
    """Every compiled two-tile variant (batch 9-16 in one launch), at a group size of its mode, with beta."""
    g = {0: 64, 1: 192, 2: 128}[mode]
    assert imma_mode(g) == mode and imma_tiles(16) == 2
    x, planes, alpha, beta = random_problem(np.random.default_rng(p * 10 + mode), 16, 130, 24 * 128, p, g,
                                            with_beta=True, kind="mixed")
    dev = tiled([cupy.asarray(a) for a in (x, planes, alpha, beta)])
    assert_same_bytes(cupy.asnumpy(gpu.imma_gemm(*dev, group_size=g)),
                      exact_mma_gemm(x, planes, alpha, beta, group_size=g))


def test_imma_gemm_rows_do_not_depend_on_the_batch():
    x, planes, alpha, _ = random_problem(np.random.default_rng(13), 16, 333, 4096, 3, 128)
    dev = [gpu.tile_planes(cupy.asarray(planes)), cupy.asarray(alpha)]
    full = cupy.asnumpy(gpu.imma_gemm(cupy.asarray(x), *dev, group_size=128))
    for M in (1, 5, 8, 11):
        part = cupy.asnumpy(gpu.imma_gemm(cupy.asarray(x[:M]), *dev, group_size=128))
        assert (part.view(np.uint16) == full[:M].view(np.uint16)).all()


def test_imma_gemm_refuses_what_it_does_not_take():
    x, planes, alpha, _ = random_problem(np.random.default_rng(0), 2, 64, 1024, 5, 128)
    x, planes, alpha = cupy.asarray(x), cupy.asarray(planes), cupy.asarray(alpha)
    tiles = gpu.tile_planes(planes)
    with pytest.raises(ValueError, match="imma_gemm: takes"):
        gpu.imma_gemm(x, tiles, alpha, group_size=128)  # p = 5
    with pytest.raises(ValueError, match="batch 1..16"):
        gpu.imma_gemm(cupy.zeros((17, 1024), cupy.float16), tiles[:2], alpha[:2], group_size=128)
    with pytest.raises(ValueError, match=r"tiles: must be the planes in the tile layout, uint32 \(2, 4, 4, 128\)"):
        gpu.imma_gemm(x, planes[:2], alpha[:2], group_size=128)  # row-major planes
    with pytest.raises(ValueError, match="tiles: must be uint32"):
        gpu.imma_gemm(x, tiles[:2].view(cupy.int32), alpha[:2], group_size=128)


@pytest.mark.parametrize("M", [1, 2, 3, 8, 16])
@pytest.mark.parametrize("g", [64, 128])
@pytest.mark.parametrize("with_planes", [False, True])
def test_bcq_matmul_small_batches_take_an_exact_tensor_core_path(M, g, with_planes):
    """Up to batch 16 at p <= 4, given the tiles (alone or beside the planes), bcq_matmul's answer is the
    exact contract's, byte for byte (tiles of more planes are cut to p = alpha.shape[0])."""
    x, planes, alpha, beta = random_problem(np.random.default_rng(M + g), M, 200, 1536, 4, g, with_beta=True)
    planes, alpha = planes[:3], alpha[:3]
    dx, dp, da, db = (cupy.asarray(a) for a in (x, planes, alpha, beta))
    tiles = gpu.tile_planes(cupy.asarray(np.concatenate([planes, planes[:1]])))
    got = gpu.bcq_matmul(dx, dp if with_planes else None, da, db, group_size=g, tiles=tiles)
    assert_same_bytes(cupy.asnumpy(got), exact_mma_gemm(x, planes, alpha, beta, group_size=g))


def test_bcq_matmul_without_tiles_reads_the_planes():
    """Planes alone: the LUT kernel up to batch 4 (its contract's bytes), then dequantize + cuBLAS."""
    x, planes, alpha, beta = random_problem(np.random.default_rng(21), 8, 200, 1536, 3, 128, with_beta=True)
    dev = [cupy.asarray(a) for a in (x, planes, alpha, beta)]
    assert_same_bytes(cupy.asnumpy(gpu.bcq_matmul(dev[0][:3], *dev[1:], group_size=128)),
                      ref_lut_gemv(x[:3], planes, alpha, beta, group_size=128))
    y = cupy.asnumpy(gpu.bcq_matmul(*dev, group_size=128)).astype(np.float64)
    r = dequant_matmul(x, planes, alpha, beta, group_size=128)
    assert np.linalg.norm(y - r) / np.linalg.norm(r) < 2e-3
    with pytest.raises(ValueError, match="planes, tiles: give"):
        gpu.bcq_matmul(dev[0], None, *dev[2:], group_size=128)


def test_bcq_matmul_with_tiles_alone_serves_large_batches():
    """Past the int8 kernel's launches of 16, from the tiles alone: dequantize reads them, and gives the
    row-major planes' bytes."""
    M = 16 * gpu.kernels.imma_chunk_launches(2, 200, 1536) + 1
    x, planes, alpha, beta = random_problem(np.random.default_rng(22), M, 200, 1536, 2, 64, with_beta=True)
    dx, dp, da, db = (cupy.asarray(a) for a in (x, planes, alpha, beta))
    from_tiles = gpu.bcq_matmul(dx, None, da, db, group_size=64, tiles=gpu.tile_planes(dp))
    assert_same_bytes(cupy.asnumpy(from_tiles), cupy.asnumpy(gpu.bcq_matmul(dx, dp, da, db, group_size=64)))


@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_bcq_matmul_past_16_rows_launches_the_int8_kernel_per_16_rows(p, monkeypatch):
    """Past 16 rows, up to imma_chunk_launches launches: every row gets the exact contract's bytes (rows
    never interact), for CuPy and for torch inputs (on torch's current stream)."""
    torch = pytest.importorskip("torch")
    monkeypatch.setitem(gpu.kernels.IMMA_CHUNK_RULE, p, ((1, 3),))  # this small layer gets 3 launches at every p
    M = 16 * 3 - 5  # a last launch of 11 rows
    x, planes, alpha, beta = random_problem(np.random.default_rng(30 + p), M, 200, 1536, p, 128, with_beta=True)
    dx, dp, da, db = (cupy.asarray(a) for a in (x, planes, alpha, beta))
    want = np.concatenate([exact_mma_gemm(x[r:r + 16], planes, alpha, beta, group_size=128)
                           for r in range(0, M, 16)])
    assert_same_bytes(cupy.asnumpy(gpu.bcq_matmul(dx, None, da, db, group_size=128, tiles=gpu.tile_planes(dp))),
                      want)
    t = [torch.from_numpy(a).cuda() for a in (x, alpha, beta)]
    tiles = torch.from_dlpack(gpu.tile_planes(dp))
    cupy.cuda.Device().synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = gpu.bcq_matmul(t[0], None, t[1], t[2], group_size=128, tiles=tiles)
    s.synchronize()
    assert isinstance(y, torch.Tensor) and y.shape == (M, 200)
    assert_same_bytes(y.cpu().numpy(), want)


def test_imma_gemm_in_a_cuda_graph():
    """Two launches per 8 batch rows, all on the current stream, no host sync: capturable, and the
    replay writes the same bytes."""
    x, planes, alpha, _ = random_problem(np.random.default_rng(6), 12, 96, 1024, 2, 128)
    dev = tiled([cupy.asarray(a) for a in (x, planes, alpha)])
    out = cupy.empty((12, 96), dtype=cupy.float16)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        gpu.imma_gemm(*dev, group_size=128, out=out)  # warm-up on this stream (compile, scratch)
        stream.begin_capture()
        gpu.imma_gemm(*dev, group_size=128, out=out)
        graph = stream.end_capture()
        out.fill(0)
        graph.launch(stream)
        stream.synchronize()
    assert_same_bytes(cupy.asnumpy(out), exact_mma_gemm(x, planes, alpha, group_size=128))


def test_imma_gemm_takes_torch_tensors_on_a_torch_stream():
    torch = pytest.importorskip("torch")
    x, planes, alpha, _ = random_problem(np.random.default_rng(7), 12, 96, 1024, 2, 128)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        tx = torch.from_numpy(x).cuda()
        tp = torch.from_numpy(tile_planes(planes).view(np.int32)).cuda().view(torch.uint32)
        ta = torch.from_numpy(alpha).cuda()
        y = gpu.imma_gemm(tx, tp, ta, group_size=128)
    s.synchronize()
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float16
    assert_same_bytes(y.cpu().numpy(), exact_mma_gemm(x, planes, alpha, group_size=128))

"""Every .cu file in gpu/ compiles with nvcc for sm_80 and sm_90, with every instantiation the
Python wrapper asks NVRTC for.  Skipped (with the reason) where nvcc is not installed."""
import shutil
import subprocess
from pathlib import Path

import pytest

from gpu.kernels import BATCH_BUCKETS, DEQUANTIZE_PLANE_RANGES, IMMA_INSTANCES, bmma_variants
from reference.exact_mma import SPLIT_CHOICES, contract_split

GPU_DIR = Path(__file__).resolve().parent.parent / "gpu"
NVCC = shutil.which("nvcc")
LUT_ARGS = ("const __half*, const bcq::u32*, const __half*, const __half*, __half*, float*, unsigned int*, "
            "int, int, int, int, int, int")
INSTANTIATIONS = {
    "lut_gemv.cu": [f"template __global__ void bcq::lut_gemv<{m}>({LUT_ARGS});" for m in BATCH_BUCKETS],
    "dequantize.cu": [f"template __global__ void bcq::dequantize<{a}, {b}>(const bcq::u32*, const __half*, "
                      "const __half*, __half*, int, int, unsigned int, unsigned int, int, unsigned int, unsigned int, "
                      "int, int);" for a, b in DEQUANTIZE_PLANE_RANGES],
    "mma_gemm.cu": [f"template __global__ void bcq::mma_gemm<{t}>(const bcq::u32*, const int*, const int*, "
                    "const bcq::u32*, const __half*, const __half*, __half*, float*, unsigned int*, "
                    "int, int, int, int, int);" for t in (1, 2)],
    "bmma_gemv.cu": [f"template __global__ void bcq::bmma_gemv<{s}, {m}, {q}, {r}>(const bcq::u32*, const int*, "
                     "const int*, const bcq::u32*, const __half*, const __half*, __half*, float*, unsigned int*, "
                     "int, int, int, int, int);" for s, m, q, r in bmma_variants()],
    "imma_gemm.cu": [f"template __global__ void bcq::imma_gemm<{p}, {m}, {t}>(const bcq::u32*, const int*, "
                     "const int*, const bcq::u32*, const __half*, const __half*, __half*, float*, unsigned int*, "
                     "int, int, int, int);" for p, m, t in IMMA_INSTANCES],
}


def test_every_cu_file_is_covered():
    assert sorted(p.name for p in GPU_DIR.glob("*.cu")) == sorted(INSTANTIATIONS)  # headers (.cuh) come along


# The one instantiation allowed to spill, and by how much: imma_gemm<4, 1, 2> (p = 4, g > 128, two batch
# tiles) needs more than the 168 registers of 3 blocks per SM; spilling, it still measured 1.43-1.57x
# the two unspilled launches it replaces (docs/kernels.md, H200).  Any other spill, or a larger one, fails.
KNOWN_SPILL_BYTES = {"_ZN3bcq9imma_gemmILi4ELi1ELi2E": 40}

EXACT = ("mma_gemm.cu", "bmma_gemv.cu", "imma_gemm.cu")  # compiled once per contract split in use
EQUALIZED = contract_split(8192, 28672, 128)  # 70B down: 7168, a split that is not a power of two
CASES = [(name, split) for name in sorted(INSTANTIATIONS)
         for split in ((SPLIT_CHOICES[0], EQUALIZED, SPLIT_CHOICES[-1]) if name in EXACT else (SPLIT_CHOICES[0],))]


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed: CUDA sources not compile-checked here")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name,split", CASES)
def test_compiles_and_does_not_spill_on_hopper(name, split, arch, tmp_path):
    src = tmp_path / "unit.cu"
    src.write_text(f'#include "{GPU_DIR / name}"\n' + "\n".join(INSTANTIATIONS[name]) + "\n")
    out = subprocess.run([NVCC, "-std=c++17", f"-arch={arch}", "-cubin", "--ftz=false", "--fmad=false",
                          f"-DBCQ_EXACT_SPLIT_INPUTS={split}",
                          "-Xptxas", "-v", "-o", str(tmp_path / "unit.cubin"), str(src)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "warning" not in out.stderr.lower().replace("warning : ", "warning:"), out.stderr[-3000:]
    if arch != "sm_90":  # the kernels are tuned for Hopper; elsewhere compiling is what is checked
        return
    # local-memory spills would silently slow the kernel by several times
    function = None
    for line in out.stderr.splitlines():
        if "Compiling entry function" in line:
            function = line.split("'")[1]
        elif "spill stores" in line:
            spilled = int(line.split("bytes spill stores")[0].split(",")[-1])
            allowed = next((b for prefix, b in KNOWN_SPILL_BYTES.items() if function.startswith(prefix)), 0)
            assert spilled <= allowed, f"{function}: {line.strip()}"

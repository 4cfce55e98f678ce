"""sim/: a bandwidth, issue and energy model of BCQ inference on GPUs and BCQ accelerators.

Hardware is data (sim/hardware.toml), kernel constants are data (sim/kernels.toml), model shapes
are data (sim/data/models.toml); every number carries its source.  docs/sim.md has the equations,
the calibration and the measured error.

    from sim import layer_cost, sweep, decode, get_device
    layer_cost("H100-SXM", "bcq_lut", N=28672, K=4096, M=1, bits=2).time_s      # seconds
    sweep("H100-SXM", "anyprec", N=[4096, 8192], K=4096, M=[1, 4, 8], bits=[3, 4], grid=True)
    decode("H100-SXM", "llama-3.1-8b", "bcq_lut", bits={"default": 3, "down": 4}).tokens_per_s
    layer_cost("FIGLUT", None, N=4096, K=4096, M=32, bits=2.4).tops_per_W

Methods on GPUs: fp16 (cuBLAS), bcq_lut (our AnyBCQ LUT-GEMM kernel), anyprec (Any-Precision
LLM), bcq_fixed (LUT-GEMM, fixed precision), int4 (uniform W4A16 dequantize kernel), bcq_bmma and
bcq_imma (our exact 1-bit and int8 tensor-core kernels; H200-fitted).
"""
from .accel import gemm as accelerator_gemm
from .cost import Cost
from .gpu import GPU_METHODS, gemv, launch_geometry
from .hardware import GPU, Accelerator, get_device, load_hardware
from .kernels import KernelConstants, default_kernels, load_kernels
from .sweep import columns, layer_cost, sweep
from .workload import DecodeResult, ModelConfig, decode, get_model, load_models

__all__ = ["Accelerator", "Cost", "DecodeResult", "GPU", "GPU_METHODS", "KernelConstants", "ModelConfig",
           "accelerator_gemm", "columns", "decode", "default_kernels", "gemv", "get_device", "get_model",
           "launch_geometry", "layer_cost", "load_hardware", "load_kernels", "load_models", "sweep"]

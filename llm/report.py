"""The demo's report: markdown tables, the issue's targets checked with numbers, and PNG plots.

    write_report(results, out_dir) -> out_dir/report.md, llm_ppl.png, llm_kl.png, llm_memory.png,
                                      llm_calibration.png

``results`` is the dict ``llm.pipeline.run_demo`` returns (also its results.json), so a report can be
rebuilt from a saved JSON file without running anything.
"""
from __future__ import annotations

from pathlib import Path

from bcq_core.fileio import atomic_write, atomic_write_text

TARGET_RATIO = {2: 3.0, 3: 1.3, 4: 1.1}   # calibrated AnyBCQ ppl / FP ppl, from the issue
TARGET_VS_FIXED = 0.05                    # multi-precision within 5 % of fixed-precision BCQ
MB = 1e6


def _p(d: dict, p):
    """JSON turns int keys into strings: read either."""
    return d.get(p, d.get(str(p)))


def _fmt(x, digits=2):
    if x is None:
        return "—"
    return f"{x:.{digits}f}" if abs(x) < 1e4 else f"{x:.3g}"


def ppl_table(results: dict) -> str:
    bits = results["config"]["bits"]
    head = "| method | one model | " + " | ".join(f"{b}-bit ppl (×FP) | {b}-bit KL | {b}-bit bits/w"
                                                 for b in bits) + " |"
    lines = [head, "|" + "---|" * (2 + 3 * len(bits)),
             "| full precision (the model as loaded) | — | " + " | ".join(
                 f"{_fmt(results['fp_ppl'])} | 0 | 16" for _ in bits) + " |"]
    for row in results["methods"].values():
        cells = []
        for b in bits:
            ppl, kl, r, bpw = (_p(row[k], b) for k in ("ppl", "kl", "ppl_ratio", "bits_per_weight"))
            cells.append("— | — | —" if ppl is None
                         else f"{_fmt(ppl)} ({_fmt(r)}×) | {_fmt(kl, 3)} | {_fmt(bpw)}")
        lines.append(f"| {row['label']} | {'yes' if row['multi'] else 'no'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: dict) -> list[tuple[str, str, str, bool]]:
    """(target, wanted, measured, met) for every target of the issue the results can check."""
    m, bits, out = results["methods"], results["config"]["bits"], []
    for key, row in m.items():
        ppl = [_p(row["ppl"], b) for b in bits if _p(row["ppl"], b) is not None]
        out.append((f"{row['label']}: perplexity falls with bits", "monotone",
                    " > ".join(_fmt(x) for x in ppl), all(a > b for a, b in zip(ppl, ppl[1:]))))
    cal = m.get("progressive+cal")
    for key in ("progressive+cal", "joint+cal", "progressive+cal+e2e", "joint+cal+e2e"):
        if key not in m:
            continue
        name = "calibrated AnyBCQ" if key == "progressive+cal" else m[key]["label"]
        for b in bits:
            r = _p(m[key]["ppl_ratio"], b)
            if b in TARGET_RATIO and r is not None:
                out.append((f"{name} {b}-bit vs FP", f"≤ {TARGET_RATIO[b]}×", f"{_fmt(r)}×", r <= TARGET_RATIO[b]))
    pairs = {"progressive": "fixed", "joint": "fixed", "progressive+imp": "fixed+imp", "joint+imp": "fixed+imp",
             "progressive+cal": "fixed+imp", "joint+cal": "fixed+imp"}
    for key, ref_key in pairs.items():
        if key in m and ref_key in m:
            for b in bits:
                a, f = _p(m[key]["ppl"], b), _p(m[ref_key]["ppl"], b)
                if a is not None and f is not None:
                    gap = a / f - 1
                    out.append((f"{m[key]['label']} {b}-bit vs {m[ref_key]['label']}", f"≤ +{TARGET_VS_FIXED:.0%}",
                                f"{gap:+.1%} ({_fmt(a)} vs {_fmt(f)})", gap <= TARGET_VS_FIXED))
    rtn = m.get("rtn")
    if rtn and cal:
        for b in bits:
            if b <= 3 and _p(rtn["ppl"], b) is not None:
                a, r = _p(cal["ppl"], b), _p(rtn["ppl"], b)
                out.append((f"calibrated AnyBCQ {b}-bit vs RTN", "far ahead (≥ 2× lower ppl)",
                            f"{_fmt(a)} vs {_fmt(r)} ({r / a:.1f}× lower)", r / a >= 2))
    return out


def memory_table(results: dict) -> str:
    mem = results.get("memory")
    if not mem:
        return "_(the calibrated progressive model was not built in this run)_"
    bits = results["config"]["bits"]
    lin_sep = sum(_p(mem["linear"], b) for b in bits)
    rows = ["| what | one multi-precision model | one model per precision | saving |", "|---|---|---|---|",
            f"| quantized linear layers | {mem['linear_all'] / MB:.1f} MB | {lin_sep / MB:.1f} MB | "
            f"{1 - mem['linear_all'] / lin_sep:.0%} |",
            f"| whole model (embedding, norms in fp16) | {mem['multi'] / MB:.1f} MB | {mem['separate'] / MB:.1f} MB "
            f"| {mem['saving']:.0%} |"]
    rows += [f"| serving {b}-bit only (linear layers) | {_p(mem['linear'], b) / MB:.1f} MB | | |" for b in bits]
    return "\n".join(rows)


def e2e_text(results) -> str:
    """', end-to-end training on N tokens of them' when an end-to-end method ran (its windows come from the
    same calibration articles, drawn with another seed), else ''."""
    e2e = results["config"].get("e2e")
    if not e2e or not any(m.endswith("+e2e") for m in results["config"]["methods"]):
        return ""
    return f", end-to-end training on {e2e['n_seqs'] * e2e['seq_len']} tokens of them"


def write_report(results: dict, out_dir) -> Path:
    """Write report.md and the plots; returns the markdown path."""
    out_dir = Path(out_dir)
    plots = make_plots(results, out_dir)
    t = results["timing_s"]
    lines = [f"# {results['model']}: multi-precision AnyBCQ against the baselines", "",
             f"Group size {results['config']['group_size']}, bits {results['config']['bits']}; perplexity on "
             f"{results['eval_tokens']} held-out Wikipedia tokens ({results['config']['windows']} windows of "
             f"{results['config']['window_len']}); KL(FP ‖ quantized) in nats per token; block calibration on "
             f"{results['calib_tokens']} tokens of other articles{e2e_text(results)}. Total time {t.get('total', 0):.0f} s"
             f"{' on ' + results['hardware'] if 'hardware' in results else ''}.", "",
             ppl_table(results), "", "## Targets", "", "| target | wanted | measured | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {'yes' if ok else '**no**'} |" for a, b, c, ok in targets(results)]
    lines += ["", "## Memory (2/3/4-bit served by one model vs three)", "", memory_table(results), ""]
    for name in ("calibration_progressive", "calibration_joint"):
        if name in results:
            lines += [f"## {name.replace('_', ' ')}", "", _calib_summary(results[name]), ""]
    for name in ("e2e_progressive", "e2e_joint"):
        if name in results:
            lines += [f"## end-to-end scale training ({name[4:]}): KL on its held training sequences", "",
                      "| precision | KL before | KL after | steps | first / last step loss | kept old scales |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {s['p']}-bit | {s['kl_before']:.4f} | {s['kl_after']:.4f} | {len(s['losses'])} | "
                      f"{s['losses'][0]:.4f} / {s['losses'][-1]:.4f} | {'yes' if s['reverted'] else 'no'} |"
                      for s in results[name]]
            lines.append("")
    if "continuations" in results:
        lines += ["## Greedy continuations (calibrated progressive model)", ""]
        cont = results["continuations"]
        from .evaluate import PROMPTS
        for i, prompt in enumerate(PROMPTS):
            lines.append(f"- **{prompt}**")
            for key in ["fp"] + [b for b in results["config"]["bits"]]:
                text = _p(cont, key)[i].replace("\n", " ")
                lines.append(f"  - {'FP' if key == 'fp' else f'{key}-bit'}: {text}")
        lines.append("")
    lines += ["## Timing (s)", "", "| " + " | ".join(t) + " |", "|" + "---|" * len(t),
              "| " + " | ".join(f"{v:.0f}" for v in t.values()) + " |", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _calib_summary(stats: list[dict]) -> str:
    out = ["| precision | block MSE before (mean) | after (mean) | blocks improved | kept old scales |",
           "|---|---|---|---|---|"]
    for p in sorted({s["p"] for s in stats}):
        s = [x for x in stats if x["p"] == p]
        before = sum(x["mse_before"] for x in s) / len(s)
        after = sum(x["mse_after"] for x in s) / len(s)
        better = sum(x["mse_after"] < x["mse_before"] for x in s)
        out.append(f"| {p}-bit | {before:.4g} | {after:.4g} | {better}/{len(s)} | {sum(x['reverted'] for x in s)} |")
    return "\n".join(out)


def make_plots(results: dict, out_dir) -> list[Path]:
    """llm_ppl.png, llm_kl.png, llm_memory.png, llm_calibration.png (what the results hold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir, paths = Path(out_dir), []
    for metric, ylabel, name in (("ppl", "perplexity (log scale)", "llm_ppl.png"),
                                 ("kl", "KL(FP ‖ quantized), nats/token (log)", "llm_kl.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for row in results["methods"].values():
            pts = sorted((int(b), v) for b, v in row[metric].items() if v is not None)
            ax.plot([b for b, _ in pts], [v for _, v in pts], "o-" if row["multi"] else "s--", label=row["label"])
        if metric == "ppl":
            ax.axhline(results["fp_ppl"], color="k", lw=1, ls=":", label=f"FP ({results['fp_ppl']:.1f})")
        ax.set_yscale("log")
        ax.set_xticks(results["config"]["bits"])
        ax.set_xlabel("bits per weight (planes / code bits)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{results['model'].split('/')[-1]}, g = {results['config']['group_size']}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
        paths.append(_save(fig, out_dir / name))
    mem = results.get("memory")
    if mem:
        bits = results["config"]["bits"]
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        lin_sep = sum(_p(mem["linear"], b) for b in bits) / MB
        labels = ["linear layers", "whole model"]
        multi, sep = [mem["linear_all"] / MB, mem["multi"] / MB], [lin_sep, mem["separate"] / MB]
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], multi, 0.4, label="one model, 2/3/4-bit (AnyBCQ)")
        ax.bar([i + 0.2 for i in x], sep, 0.4, label="one model per precision")
        ax.set_xticks(list(x), labels)
        ax.set_ylabel("MB")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out_dir / "llm_memory.png"))
    stats = results.get("calibration_progressive")
    if stats:
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for p in sorted({s["p"] for s in stats}):
            s = [x for x in stats if x["p"] == p]
            line, = ax.plot([x["block"] for x in s], [x["mse_before"] for x in s], "--", lw=1)
            ax.plot([x["block"] for x in s], [x["mse_after"] for x in s], "-", color=line.get_color(),
                    label=f"{p}-bit (dashed: before)")
        ax.set_yscale("log")
        ax.set_xlabel("decoder block")
        ax.set_ylabel("block output MSE vs FP")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        paths.append(_save(fig, out_dir / "llm_calibration.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path

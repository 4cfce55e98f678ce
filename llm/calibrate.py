r"""Calibration on held-apart text: activation importance for the quantizer, then block-wise scale training.

Step 1 (beyond the paper, ``activation_importance``): d_k = E[x_k²] per input channel of every linear,
handed to the quantizer as its per-input importance.  On SmolLM2 this matters more than anything else:
plain least squares gives up the rare large weights of channels with huge activations.

Step 2 (the AnyBCQ paper, ``calibrate``): binary codes frozen, only the scales trained.  For decoder
block b and every stored precision p, with X_fp the full-precision model's input to block b and X_q^p the input the p-bit model (blocks < b already calibrated) gives it:

    Y      = Block_fp(X_fp)                                   target, computed once per block
    X̃      = where(U < mix, X_q^p, X_fp),  U ~ Uniform[0,1)   QDrop-style elementwise mix (paper: 0.5)
    loss   = mean (Block_q^p(X̃) − Y)²                         MSE over (S, L, H)
    α_p, β_p ← Adam(loss), cosine-decayed lr;  ∂loss/∂α scaled by 1/g (the paper's rule)
    X_q^p  ← Block_q^p(X_q^p),  X_fp ← Y                      then on to block b + 1

Only α_p (and β_p) of block b move; the planes B_i never change, and each precision's scale set is
trained on its own.  (With Adam the 1/g gradient scale only shifts the ε term; it is kept for fidelity.)
Both steps read only calibration sequences (``llm.data.calibration_windows``), never evaluation text.

Shortcut, stated: the paper runs 5000 iterations per block on 512 C4 sequences of 1024 tokens (batch 2),
lr 1e-4.  On a 2-core CPU this module's default is ``CalibConfig()``: 32 iterations per block and
precision on 32 Wikipedia sequences of 256 tokens (batch 2), Adam step 1e-2 relative to the layer's
mean |α| (fewer steps need a larger step; 3e-2 made 4-bit blocks worse on SmolLM2), that is 156x
fewer iterations and 64x fewer calibration tokens: about 5.5 minutes for 30 blocks x 3 precisions.
On a GPU (the model's device; float32 there too) each step is replayed from a CUDA graph
(``llm.cuda_graph``, ``CalibConfig.cuda_graph``): issued op by op, a step is bound by the host (Python
launches its few hundred small kernels more slowly than the GPU runs them).  On an H200, 256 steps
of 4 x 256 tokens for 30 blocks x 3 precisions take 78 s graphed, 290 s op by op (docs/results_smollm2.md).
A block that comes out worse on its own input keeps its old scales (``BlockStats.reverted``).  The planes come from the
uncalibrated progressive expansion (the quantizer fits all precisions first); the paper seeds plane
p+1 from the residual of the already calibrated α_p.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .bcq_linear import BCQLinear
from .convert import bcq_layers, model_precisions
from .cuda_graph import training_step
from .models import decoder_blocks, model_device


@dataclass
class CalibConfig:
    """Calibration settings; the paper's values are in the comments."""

    iters: int = 32          # paper: 5000 per block
    lr: float = 1e-2         # relative to the layer's mean |α_p|; paper: 1e-4 absolute (~1 % of a Llama scale)
    batch: int = 2           # paper: 2 sequences per step
    n_seqs: int = 32         # paper: 512 sequences
    seq_len: int = 256       # paper: 1024 tokens
    mix: float = 0.5         # paper: 0.5 (1.0 for Qwen/Phi): P(input element from the quantized stream)
    seed: int = 0
    precisions: tuple[int, ...] | None = None  # default: every precision the model stores
    cuda_graph: bool = True  # on a GPU, replay each step from a CUDA graph (llm.cuda_graph)

    def __post_init__(self):
        check_training_config(self, ("iters", "batch", "n_seqs", "seq_len"))
        if not 0.0 <= self.mix <= 1.0:
            raise ValueError(f"mix: must lie in [0, 1], got {self.mix}")


def check_training_config(config, int_fields) -> None:
    """The checks every scale-training config shares: the named fields positive ints, lr a positive
    finite number, batch no larger than n_seqs.  ValueError naming the field otherwise."""
    for name in int_fields:
        v = getattr(config, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: must be a positive int, got {v!r}")
    if not (isinstance(config.lr, (int, float)) and math.isfinite(config.lr) and config.lr > 0):
        raise ValueError(f"lr: must be a positive finite number, got {config.lr!r}")
    if config.batch > config.n_seqs:
        raise ValueError(f"batch: must be <= n_seqs={config.n_seqs}, got {config.batch}")


@dataclass
class BlockStats:
    """MSE of one block's output against the full-precision block, before and after training."""

    block: int
    p: int
    mse_before: float
    mse_after: float
    losses: list[float] = field(default_factory=list)
    reverted: bool = False  # training made the block worse on its input, so the old scales were kept


class _Stop(Exception):
    pass


def activation_importance(model: nn.Module, ids, skip=("lm_head",), progress: bool = True) -> dict[str, np.ndarray]:
    """{linear name: float32 [K]} mean squared input activation per input channel, normalised to mean 1.

    d_k = E_tokens[x_k²] is the diagonal of XᵀX / T: the quantizer's optional per-input importance
    (``quantize(W, config, importance=d)``) then minimises Σ_k d_k (w_k − ŵ_k)² per group, i.e. the
    layer's output error under uncorrelated inputs, which protects the weights of the few channels
    with very large activations.
    """
    from .convert import linear_layers

    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long).to(model_device(model))
    sums: dict[str, torch.Tensor] = {}

    def hook(name):
        def f(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()   # (tokens, K)
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
        return f

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in linear_layers(model, skip).items()]
    try:
        with torch.no_grad():
            for i in tqdm(range(len(ids)), desc="activations", unit="seq", disable=not progress, leave=False):
                model(ids[i:i + 1], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {n: (s / s.mean()).float().cpu().numpy() for n, s in sums.items()}


def block_inputs(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """(hidden states entering block 0: [S, L, H], the keyword arguments every block is called with).

    The kwargs (rotary position embeddings, mask) are captured from one sequence so that they broadcast
    over any batch.
    """
    blocks = decoder_blocks(model)
    ids = ids.to(model_device(model))
    captured = {}

    def hook(module, args, kwargs):
        captured["x"] = args[0] if args else kwargs.pop("hidden_states")
        captured["kw"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    xs = []
    try:
        with torch.no_grad():
            for i in range(len(ids)):
                try:
                    model(ids[i:i + 1], use_cache=False)
                except _Stop:
                    xs.append(captured["x"])
    finally:
        handle.remove()
    kw = captured["kw"]
    kw["use_cache"] = False
    kw.pop("past_key_values", None)
    kw.pop("past_key_value", None)
    return torch.cat(xs), kw


def run_block(block: nn.Module, x: torch.Tensor, kw: dict, chunk: int = 8) -> torch.Tensor:
    """block(x) for x [S, L, H] in chunks of sequences, no grad."""
    with torch.no_grad():
        return torch.cat([_out(block(x[i:i + chunk], **kw)) for i in range(0, len(x), chunk)])


def _out(y):
    return y[0] if isinstance(y, tuple) else y


def _copy_from_host(dst: torch.Tensor, src: torch.Tensor) -> None:
    """dst <- src (a CPU tensor); to a GPU through page-locked memory, because a copy from pageable
    memory waits for the stream first, which would make the host wait for every step."""
    if dst.is_cuda:
        dst.copy_(src.pin_memory(), non_blocking=True)
    else:
        dst.copy_(src)


def scale_gradients(params, factor: float) -> list:
    """Multiply the gradient of every tensor in params by factor (hooks; remove them when done)."""
    return [t.register_hook(lambda grad: grad * factor) for t in params]


def freeze_parameters(module: nn.Module) -> list[torch.Tensor]:
    """Stop gradients to every parameter of module that has them; returns those (to thaw afterwards)."""
    frozen = [t for t in module.parameters() if t.requires_grad]
    for t in frozen:
        t.requires_grad_(False)
    return frozen


def scale_optimizer(linears, p: int, lr: float, steps: int, capturable: bool = False):
    """Adam over α_p (and β_p) of every BCQLinear in linears, each tensor's step lr · mean|t| (so the
    step is scale-free), cosine-decayed to 0 over steps.  Returns (optimizer, scheduler, the
    trainable tensors of each layer); the layers are in training mode until finish_scale_training().
    capturable: Adam's CUDA-graph form (its step count and learning rates are tensors on the device)."""
    params = [m.train_scales(p) for m in linears]
    groups = []
    for ts in params:
        for t in ts:
            step = lr * (float(t.detach().abs().mean()) or 1.0)
            groups.append({"params": [t], "lr": torch.tensor(step, device=t.device) if capturable else step})
    opt = torch.optim.Adam(groups, capturable=capturable)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 0.5 * (1 + math.cos(math.pi * it / steps)))
    return opt, sched, params


def calibrate_block(block_q: nn.Module, x_q: torch.Tensor, x_fp: torch.Tensor, y: torch.Tensor, kw: dict, p: int,
                    config: CalibConfig, generator: torch.Generator) -> list[float]:
    """Train α_p (and β_p) of every BCQLinear in block_q towards y; returns the loss of every step."""
    linears = list(bcq_layers(block_q).values())
    frozen = freeze_parameters(block_q)  # norms and biases stay as they are: only the scales train
    graphed = config.cuda_graph and x_q.is_cuda
    opt, sched, params = scale_optimizer(linears, p, config.lr, config.iters, capturable=graphed)
    hooks = [h for m, ts in zip(linears, params) for h in scale_gradients(ts, 1.0 / m.group_size)]  # the paper's 1/g
    # one step's draw, filled in place (a CUDA graph reads these very tensors)
    idx = torch.zeros(config.batch, dtype=torch.long, device=x_q.device)
    keep_q = torch.zeros((config.batch,) + tuple(x_q.shape[1:]), dtype=torch.bool, device=x_q.device)

    def body():
        x = torch.where(keep_q, x_q[idx], x_fp[idx])                        # (batch, L, H)
        return torch.mean((_out(block_q(x, **kw)) - y[idx]) ** 2)

    losses = []
    try:
        step = training_step(body, opt, [t for ts in params for t in ts], graphed)
        for _ in range(config.iters):
            # drawn on the CPU generator, so a CPU and a GPU run draw the same batches and masks
            draw = torch.randint(len(x_q), (config.batch,), generator=generator)
            mask = torch.rand(keep_q.shape, generator=generator) < config.mix
            _copy_from_host(idx, draw)
            _copy_from_host(keep_q, mask)
            losses.append(step())  # read at the end: .item() would wait for every step
            sched.step()
        losses = torch.stack(losses).tolist()
    finally:
        for h in hooks:
            h.remove()
        for m in linears:
            m.finish_scale_training()
        for t in frozen:
            t.requires_grad_(True)
    return losses


def calibrate(model_q: nn.Module, model_fp: nn.Module, ids: np.ndarray | torch.Tensor,
              config: CalibConfig | None = None, progress: bool = True) -> list[BlockStats]:
    """Calibrate every block of model_q (converted) against model_fp on token ids [S, L]; in place.

    Returns one BlockStats per (block, precision): MSE of the block on its quantized-stream input,
    before and after training.
    """
    config = config or CalibConfig()
    stored = model_precisions(model_q)
    precisions = tuple(config.precisions or stored)
    for p in precisions:
        if p not in stored:
            raise ValueError(f"precisions: the model stores {list(stored)}, not {p}")
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    if ids.ndim != 2:
        raise ValueError(f"ids: must be [S, L] token ids, got shape {tuple(ids.shape)}")
    blocks_q, blocks_fp = decoder_blocks(model_q), decoder_blocks(model_fp)
    if len(blocks_q) != len(blocks_fp):
        raise ValueError(f"model_fp: has {len(blocks_fp)} blocks, model_q has {len(blocks_q)}")
    before = {name: m.precision for name, m in bcq_layers(model_q).items()}
    generator = torch.Generator().manual_seed(config.seed)
    x_fp, kw = block_inputs(model_fp, ids)                                 # (S, L, H)
    x_q = {p: x_fp.clone() for p in precisions}                            # embeddings are not quantized
    stats = []
    bar = tqdm(total=len(blocks_q) * len(precisions), desc="calibrate", unit="block", disable=not progress)
    try:
        for b, (block_q, block_fp) in enumerate(zip(blocks_q, blocks_fp)):
            y = run_block(block_fp, x_fp, kw)
            for p in precisions:
                set_layers_precision(block_q, p)
                saved = save_scales(block_q, p)
                x_before = run_block(block_q, x_q[p], kw)
                mse_before = float(torch.mean((x_before - y) ** 2))
                losses = calibrate_block(block_q, x_q[p], x_fp, y, kw, p, config, generator)  # leaves precision p
                x_next = run_block(block_q, x_q[p], kw)
                mse_after = float(torch.mean((x_next - y) ** 2))
                reverted = not mse_after <= mse_before  # guard: never leave a block worse than it came
                if reverted:  # the old scales, bit for bit, and the output they gave
                    restore_scales(block_q, p, saved)
                    x_next, mse_after = x_before, mse_before
                x_q[p] = x_next
                stats.append(BlockStats(b, p, mse_before, mse_after, losses, reverted))
                bar.set_postfix(block=b, p=p, mse=f"{mse_before:.3g}->{mse_after:.3g}")
                bar.update()
            x_fp = y
    finally:
        bar.close()
        for name, m in bcq_layers(model_q).items():
            m.precision = before[name]
    return stats


def set_layers_precision(module: nn.Module, p: int) -> None:
    """Serve every BCQLinear in module at precision p."""
    for m in bcq_layers(module).values():
        m.set_precision(p)


def save_scales(module: nn.Module, p: int) -> list[tuple[BCQLinear, torch.Tensor, torch.Tensor | None]]:
    """A copy of α_p (and β_p) of every BCQLinear in module, for restore_scales."""
    return [(m, m.alpha(p).clone(), None if m.beta(p) is None else m.beta(p).clone())
            for m in bcq_layers(module).values()]


def restore_scales(module: nn.Module, p: int, saved) -> None:
    """Put back the scales save_scales copied, bit for bit."""
    with torch.no_grad():
        for m, alpha, beta in saved:
            m.alpha(p).copy_(alpha)
            if beta is not None:
                m.beta(p).copy_(beta)
            m.clear_cache()

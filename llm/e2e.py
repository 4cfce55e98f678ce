r"""End-to-end scale training (EfficientQAT's "E2E-QP", scales only) after the block-wise calibration.

For every trained precision p, with the binary planes B_i frozen and only α_p (and β_p) of *all*
BCQLinear layers free, on calibration sequences x of L tokens (never evaluation text):

    P_t    = softmax(z_fp(x)_t)                 FP teacher, under torch.no_grad
    Q_t^p  = softmax(z_q^p(x)_t)                quantized student served at precision p
    loss_p = 1/(B (L−1)) Σ_{b, t<L−1} Σ_v P_t(v) (log P_t(v) − log Q_t^p(v))     KL(P ‖ Q^p), nats/token
    α_p, β_p ← Adam(loss_p), step lr · mean|α_p| per tensor (scale-free), cosine-decayed to 0

Each precision has its own scale set, so each is trained on its own (one pass of ``steps`` Adam
steps per precision); the other precisions' scales are not touched.  The same tokens the evaluation
scores (positions 0..L−2 predicting 1..L−1) are trained on, here on calibration text only.

Guard, as in ``llm.calibrate``: the loss is measured on a fixed held set of ``held`` training
sequences before and after (scales rounded to float16); if training made it worse the old scales
come back bit for bit (``E2EStats.reverted``).

Shortcut, stated: EfficientQAT trains E2E-QP for one epoch over 4096 RedPajama sequences of 2048
tokens (lr 2e-5 on Llama-2) with the ground-truth next-token loss; here it is a few dozen steps of
batch 1 on 256-token Wikipedia sequences on a 2-core CPU (448 steps of 8, 524 k tokens, on an H200,
each step replayed from a CUDA graph), and the loss is the KL to the full-precision model's logits
(distillation) rather than cross-entropy on the labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .calibrate import (
    check_training_config,
    freeze_parameters,
    restore_scales,
    save_scales,
    scale_optimizer,
    set_layers_precision,
)
from .convert import bcq_layers, model_precisions
from .cuda_graph import training_step
from .models import model_device


@dataclass
class E2EConfig:
    """End-to-end scale-training settings (per precision)."""

    steps: int = 64          # Adam steps per precision (EfficientQAT: one epoch of 4096 x 2048 tokens)
    lr: float = 2e-3         # relative to each scale tensor's mean |α|; cosine-decayed to 0
    n_seqs: int = 64         # calibration sequences drawn (seed 2: not the block-wise calibration's draw)
    seq_len: int = 256       # tokens per sequence
    batch: int = 1           # sequences per step
    held: int = 4            # of the n_seqs, how many measure the loss before/after (the guard)
    seed: int = 0
    precisions: tuple[int, ...] | None = None  # default: every precision the model stores
    cuda_graph: bool = True  # on a GPU, replay each step from a CUDA graph (llm.cuda_graph)

    def __post_init__(self):
        check_training_config(self, ("steps", "n_seqs", "seq_len", "batch", "held"))
        if self.seq_len < 2:
            raise ValueError(f"seq_len: must be >= 2 (one token predicts the next), got {self.seq_len}")
        if self.held > self.n_seqs:
            raise ValueError(f"held: must be <= n_seqs={self.n_seqs}, got {self.held}")


@dataclass
class E2EStats:
    """KL (nats/token) on the held training sequences before and after, and the loss of every step."""

    p: int
    kl_before: float
    kl_after: float
    losses: list[float] = field(default_factory=list)
    reverted: bool = False


def kl_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """mean over positions of KL(softmax(teacher) ‖ softmax(student)); logits [B, T, V], float32 math."""
    log_p = torch.log_softmax(teacher_logits.float(), dim=-1).flatten(0, -2)
    log_q = torch.log_softmax(student_logits.float(), dim=-1).flatten(0, -2)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(ids, use_cache=False).logits[:, :-1]          # positions predicting tokens 1..L-1


def _held_kl(model_q, teacher: list[torch.Tensor], ids: torch.Tensor) -> float:
    with torch.no_grad():
        return float(np.mean([float(kl_loss(t, _logits(model_q, ids[i:i + 1]))) for i, t in enumerate(teacher)]))


def train_e2e(model_q: nn.Module, model_fp: nn.Module, ids, config: E2EConfig | None = None,
              progress: bool = True) -> list[E2EStats]:
    """Train the scales of every BCQLinear of model_q (in place) to match model_fp's logits on ids [S, L].

    One E2EStats per trained precision.  Codes, norms, embedding and biases never change; every
    layer's serving precision is restored afterwards.
    """
    config = config or E2EConfig()
    stored = model_precisions(model_q)
    precisions = tuple(config.precisions or stored)
    for p in precisions:
        if p not in stored:
            raise ValueError(f"precisions: the model stores {list(stored)}, not {p}")
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    if ids.ndim != 2 or ids.shape[1] < 2:
        raise ValueError(f"ids: must be [S, L] token ids with L >= 2, got shape {tuple(ids.shape)}")
    if len(ids) < config.batch or len(ids) < config.held:
        raise ValueError(f"ids: {len(ids)} sequences, fewer than batch={config.batch} or held={config.held}")
    ids = ids.to(model_device(model_q))
    layers = bcq_layers(model_q)
    before = {name: m.precision for name, m in layers.items()}
    generator = torch.Generator().manual_seed(config.seed)
    held = ids[:config.held]
    with torch.no_grad():                                        # the teacher never builds a graph
        held_teacher = [_logits(model_fp, held[i:i + 1]).float() for i in range(len(held))]
    stats = []
    frozen = freeze_parameters(model_q)                          # embedding, norms: not trained
    try:
        for p in precisions:
            set_layers_precision(model_q, p)
            kl_before = _held_kl(model_q, held_teacher, held)
            saved = save_scales(model_q, p)
            losses = _train_precision(model_q, model_fp, ids, p, config, generator, progress)
            kl_after = _held_kl(model_q, held_teacher, held)
            reverted = not kl_after <= kl_before
            if reverted:
                restore_scales(model_q, p, saved)
                kl_after = kl_before
            stats.append(E2EStats(p, kl_before, kl_after, losses, reverted))
    finally:
        for t in frozen:
            t.requires_grad_(True)
        for name, m in layers.items():
            m.precision = before[name]
    return stats


def _train_precision(model_q, model_fp, ids, p, config, generator, progress) -> list[float]:
    layers = list(bcq_layers(model_q).values())
    graphed = config.cuda_graph and ids.is_cuda
    opt, sched, params = scale_optimizer(layers, p, config.lr, config.steps, capturable=graphed)
    losses = []
    passes = -(-config.steps * config.batch // len(ids))                 # every sequence once per pass
    order = torch.cat([torch.randperm(len(ids), generator=generator) for _ in range(passes)]).to(ids.device)
    x = ids[:config.batch].clone()          # this step's sequences, filled in place (a CUDA graph reads x)

    def body():
        with torch.no_grad():
            teacher = _logits(model_fp, x)
        return kl_loss(teacher, _logits(model_q, x))

    step = training_step(body, opt, [t for ts in params for t in ts], graphed)
    bar = tqdm(range(config.steps), desc=f"e2e {p}-bit", unit="step", disable=not progress)
    try:
        for i in bar:
            x.copy_(ids[order[i * config.batch:(i + 1) * config.batch]])     # on the device: no host copy per step
            losses.append(step())                                # read at the end, not every step
            sched.step()
            if i % 32 == 0:                                      # reading one waits for the GPU
                bar.set_postfix(kl=f"{float(losses[-1]):.4f}")
        losses = torch.stack(losses).tolist()
    finally:
        bar.close()
        for m in layers:
            m.finish_scale_training()                            # round into the float16 buffers
    return losses

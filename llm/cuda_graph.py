r"""One training step (forward, backward, Adam) captured as a CUDA graph and replayed.

Scale training on SmolLM2 is bound by the host, not the GPU: a calibration step of one decoder block
launches a few hundred small kernels, and Python issues them more slowly than an H200 runs them (one
CPU core at 100 %, the GPU about a quarter busy).  A CUDA graph records the step's kernels once; each
replay launches all of them at the cost of one.

    step = capture_step(body, optimizer, params)   # body() reads static input tensors, returns the loss
    for it in range(steps):
        inputs.copy_(...)                            # fill the static inputs of this step
        loss = step()                                # one replay: forward, backward, optimizer.step()
        scheduler.step()                             # learning rates are tensors, so the graph sees them

Rules the caller keeps (those of ``torch.cuda.graph``): every tensor the body reads is allocated before
capture and refilled in place; the body does no host synchronisation; the optimizer is built with
``capturable=True`` and tensor learning rates (``llm.calibrate.scale_optimizer(..., capturable=True)``).
"""
from __future__ import annotations

from typing import Callable

import torch

WARMUP_STEPS = 3  # torch.cuda.graph wants a few eager steps on a side stream first


def capture_step(body: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer,
                 params: list[torch.Tensor]) -> Callable[[], torch.Tensor]:
    """A function that replays body() + backward + optimizer.step() from a CUDA graph; returns the loss.

    The warm-up steps change params and the optimizer's state; both are put back afterwards (params
    bit for bit, the state to zeros: what Adam starts from), so the first replay is the first step.
    """
    saved = [t.detach().clone() for t in params]

    def train_step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = body()
        loss.backward()
        optimizer.step()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            train_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = train_step()
    with torch.no_grad():  # undo the warm-up: the captured kernels read these very tensors
        for t, s in zip(params, saved):
            t.copy_(s)
        for state in optimizer.state.values():
            for v in state.values():
                if torch.is_tensor(v):
                    v.zero_()

    def replay() -> torch.Tensor:
        graph.replay()
        return loss

    replay.graph = graph  # kept alive with the function
    return replay

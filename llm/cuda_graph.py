r"""One training step (forward, backward, Adam) captured as a CUDA graph and replayed.

Scale training on SmolLM2 is bound by the host, not the GPU: a calibration step of one decoder block
launches a few hundred small kernels, and Python issues them more slowly than an H200 runs them (one
CPU core at 100 %, the GPU about a quarter busy).  A CUDA graph records the step's kernels once; each
replay launches all of them at the cost of one.

    step = training_step(body, optimizer, params, graphed=True)   # body() reads static inputs, returns the loss
    for it in range(steps):
        inputs.copy_(...)                            # fill the static inputs of this step
        loss = step()                                # forward, backward, optimizer.step(); a loss of its own
        scheduler.step()                             # learning rates are tensors, so the graph sees them

Rules the caller keeps (those of ``torch.cuda.graph``): every tensor the body reads is allocated before
capture and refilled in place; the body does no host synchronisation; the optimizer is built with
``capturable=True`` and tensor learning rates (``llm.calibrate.scale_optimizer(..., capturable=True)``).
"""
from __future__ import annotations

from typing import Callable

import torch

WARMUP_STEPS = 3  # torch.cuda.graph wants a few eager steps on a side stream first


def training_step(body: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                  graphed: bool) -> Callable[[], torch.Tensor]:
    """One call = body() + backward + optimizer.step(), returning the loss as a tensor of its own (no
    autograd graph, not overwritten by the next call, still on the device so that nothing waits for
    it): replayed from a CUDA graph when `graphed` (capture_step, with its rules), else issued op by op."""
    if graphed:
        return capture_step(body, optimizer, params)
    return lambda: _train_step(body, optimizer).detach()


def _train_step(body, optimizer) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = body()
    loss.backward()
    optimizer.step()
    return loss


def capture_step(body: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer,
                 params: list[torch.Tensor]) -> Callable[[], torch.Tensor]:
    """A function that replays body() + backward + optimizer.step() from a CUDA graph; returns a copy of
    the loss (the captured tensor is overwritten by every replay).

    The warm-up steps change params and the optimizer's state; both are put back afterwards (params
    bit for bit, the state to zeros: what Adam starts from), so the first replay is the first step.
    """
    saved = [t.detach().clone() for t in params]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            _train_step(body, optimizer)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = _train_step(body, optimizer)
    with torch.no_grad():  # undo the warm-up: the captured kernels read these very tensors
        for t, s in zip(params, saved):
            t.copy_(s)
        for state in optimizer.state.values():
            for v in state.values():
                if torch.is_tensor(v):
                    v.zero_()

    def replay() -> torch.Tensor:
        graph.replay()
        return loss.detach().clone()

    replay.graph = graph  # kept alive with the function
    return replay

"""What a kernel call costs, and the roofline that turns resource demands into a time.

Every method in sim/ returns a ``Cost`` whose arrays are elementwise over the broadcast inputs
(shapes, batches, bits), so one call prices a whole sweep.  The time of one kernel is

    busy   = fixed_s + max_r  demand_r / rate_r        r in {memory, issue, smem, tensor}
                                                        (roofline's overlap_norm k: the k-norm of the
                                                        times instead of their max, for kernels whose
                                                        resources overlap only partly)
    time_s = max(launch_s, busy)                        back-to-back launches pipeline, so a
                                                        kernel costs at least the launch interval

``binding`` names the resource that set ``time_s``: 'launch' when the launch interval did,
'latency' when the fixed per-call latency outweighs every streaming resource (or, for our
kernel, the dependent chain of a block does), 'unsupported' where the method cannot run that
configuration (time NaN).  ``fixed_s`` is
the per-call latency a streaming kernel cannot hide (first DRAM round trip, last wave, split-K
epilogue); it is fitted per kernel (sim/kernels.toml says from what).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

UNSUPPORTED = "unsupported"


def as_arrays(*values) -> list[np.ndarray]:
    """Broadcast numbers or arrays to float64 arrays of one shape (0-d for scalars)."""
    return list(np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in values)))


def ceil_div(a, b):
    return np.ceil(np.asarray(a, dtype=np.float64) / b)


@dataclass(frozen=True)
class Cost:
    method: str
    device: str
    time_s: np.ndarray
    bytes: Mapping[str, np.ndarray]        # DRAM bytes by kind (weights, scales, x, y, ...)
    ops: Mapping[str, np.ndarray]          # operations by kind (lane-level counts)
    resources_s: Mapping[str, np.ndarray]  # time each resource alone would need
    binding: np.ndarray                    # name of the resource that set time_s
    flops: np.ndarray                      # useful work: 2 M N K
    fixed_s: np.ndarray | float = 0.0
    energy_J: Mapping[str, np.ndarray] | None = None  # accelerators: energy by kind
    notes: tuple = field(default=())

    @property
    def shape(self) -> tuple:
        return np.shape(self.time_s)

    @property
    def bytes_total(self) -> np.ndarray:
        return sum(self.bytes.values())

    @property
    def energy_total_J(self) -> np.ndarray | None:
        return None if self.energy_J is None else sum(self.energy_J.values())

    @property
    def achieved_flops_per_s(self) -> np.ndarray:
        return self.flops / self.time_s

    @property
    def tops_per_W(self) -> np.ndarray | None:
        """Useful ops (2 per MAC) per joule / 1e12: TOPS/W.  None for GPUs (no energy model)."""
        e = self.energy_total_J
        return None if e is None else self.flops / e / 1e12

    @property
    def power_W(self) -> np.ndarray | None:
        e = self.energy_total_J
        return None if e is None else e / self.time_s

    def item(self, index=()) -> dict:
        """One configuration as plain Python numbers (JSON-ready)."""
        def pick(a):
            return float(np.asarray(a)[index]) if np.ndim(a) else float(a)
        out = dict(method=self.method, device=self.device, time_s=pick(self.time_s),
                   binding=str(np.asarray(self.binding)[index]), bytes={k: pick(v) for k, v in self.bytes.items()},
                   ops={k: pick(v) for k, v in self.ops.items()},
                   resources_s={k: pick(v) for k, v in self.resources_s.items()}, flops=pick(self.flops),
                   fixed_s=pick(self.fixed_s))
        if self.energy_J is not None:
            out["energy_J"] = {k: pick(v) for k, v in self.energy_J.items()}
            out["tops_per_W"] = pick(self.tops_per_W)
            out["power_W"] = pick(self.power_W)
        return out


def roofline(method: str, device: str, resources_s: dict, fixed_s, launch_s: float, bytes_: dict, ops: dict,
             flops, supported=None, energy_J=None, overlap_norm=np.inf) -> Cost:
    """Cost of one kernel: time = max(launch, fixed + the overlap_norm-norm of the resources' times),
    the max (inf) for a kernel whose resources overlap fully, a sum (1) for one where they take turns;
    see the module docstring."""
    names = list(resources_s)
    stack = np.stack(np.broadcast_arrays(*(np.asarray(resources_s[n], dtype=np.float64) for n in names)))
    streaming = np.linalg.norm(stack, ord=overlap_norm, axis=0)
    busy = fixed_s + streaming
    time = np.maximum(launch_s, busy)
    binding = np.where(launch_s >= busy, "launch",
                       np.where(np.asarray(fixed_s) >= streaming, "latency", np.asarray(names)[stack.argmax(axis=0)]))
    if supported is not None:
        supported = np.broadcast_to(supported, time.shape)
        time = np.where(supported, time, np.nan)
        binding = np.where(supported, binding, UNSUPPORTED)
    resources = dict(resources_s, launch=np.broadcast_to(np.float64(launch_s), time.shape))
    return Cost(method, device, time, dict(bytes_), dict(ops), resources, binding, np.asarray(flops, dtype=np.float64),
                fixed_s, energy_J)


def _merge(a: Mapping, b: Mapping, fn) -> dict:
    keys = list(dict.fromkeys([*a, *b]))
    return {k: fn(a.get(k, 0.0), b.get(k, 0.0)) for k in keys}


def serial(method: str, first: Cost, second: Cost) -> Cost:
    """Two kernels back to back (dequantize, then cuBLAS): times, bytes and ops add."""
    add = np.add
    time = first.time_s + second.time_s
    binding = np.where(np.asarray(first.time_s) > np.asarray(second.time_s), first.binding, second.binding)
    binding = np.where(np.isnan(time), UNSUPPORTED, binding)
    return Cost(method, first.device, time, _merge(first.bytes, second.bytes, add), _merge(first.ops, second.ops, add),
                _merge(first.resources_s, second.resources_s, add), binding, second.flops,
                np.add(first.fixed_s, second.fixed_s))


def repeat(method: str, cost: Cost, n) -> Cost:
    """n back-to-back calls of one kernel (n broadcasts, 0 allowed): times, bytes, ops and work times n."""
    n = np.asarray(n, dtype=np.float64)
    times = lambda d: {k: np.asarray(v) * n for k, v in d.items()}  # noqa: E731
    return Cost(method, cost.device, cost.time_s * n, times(cost.bytes), times(cost.ops), times(cost.resources_s),
                cost.binding, cost.flops * n, np.asarray(cost.fixed_s) * n)


def select(method: str, mask, if_true: Cost, if_false: Cost) -> Cost:
    """Elementwise choice between two costs of the same configurations (a kernel's batch switch)."""
    mask = np.asarray(mask, dtype=bool)
    pick = lambda a, b: np.where(mask, a, b)  # noqa: E731
    return Cost(method, if_true.device, pick(if_true.time_s, if_false.time_s),
                _merge(if_true.bytes, if_false.bytes, pick), _merge(if_true.ops, if_false.ops, pick),
                _merge(if_true.resources_s, if_false.resources_s, pick), pick(if_true.binding, if_false.binding),
                pick(if_true.flops, if_false.flops), pick(if_true.fixed_s, if_false.fixed_s))

"""Hardware specs: GPUs and BCQ accelerators as frozen dataclasses, loaded from sim/hardware.toml.

Units are in the field names (``clock_Hz``, ``dram_bandwidth_Bps``, ``smem_bytes_per_sm``...);
derived peaks are properties, never stored.  Every field has a source in ``spec.sources[field]``.

    >>> from sim.hardware import get_device
    >>> h100 = get_device("H100-SXM")
    >>> round(h100.smem_bandwidth_Bps / 1e12, 1)     # 132 SMs x 32 banks x 4 B x 1.98 GHz
    33.5

A user adds a device by adding a table to sim/hardware.toml, or to a TOML file of their own
passed as ``load_hardware(extra=["my.toml"])`` (``bcq sim --hardware my.toml``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .sourced import build, read_toml

HARDWARE_TOML = Path(__file__).with_name("hardware.toml")


@dataclass(frozen=True)
class GPU:
    name: str
    sources: Mapping[str, str]
    sms: int
    clock_Hz: float
    dram_bandwidth_Bps: float
    l2_bytes: int
    smem_bytes_per_sm: int
    smem_bytes_per_block_max: int
    smem_banks: int
    smem_bank_bytes: int
    schedulers_per_sm: int
    fp16_tensor_flops_per_s: float
    fp16_cuda_flops_per_s: float
    launch_s: float
    memory_bytes: float
    measured_copy_Bps: float | None = None
    notes: str = ""

    def __post_init__(self):
        for f in ("sms", "clock_Hz", "dram_bandwidth_Bps", "smem_banks", "smem_bank_bytes", "schedulers_per_sm",
                  "fp16_tensor_flops_per_s", "fp16_cuda_flops_per_s", "memory_bytes"):
            if not getattr(self, f) > 0:
                raise ValueError(f"{self.name}.{f}: must be positive, got {getattr(self, f)}")
        if self.launch_s < 0:
            raise ValueError(f"{self.name}.launch_s: must be >= 0")

    @property
    def smem_bytes_per_clk(self) -> int:
        """Per SM: one wavefront of 32 banks x 4 bytes per clock."""
        return self.smem_banks * self.smem_bank_bytes

    @property
    def smem_bandwidth_Bps(self) -> float:
        return self.sms * self.smem_bytes_per_clk * self.clock_Hz

    @property
    def smem_wavefronts_per_s(self) -> float:
        """Conflict-free warp-wide shared-memory accesses per second, whole GPU."""
        return self.sms * self.clock_Hz

    @property
    def warp_instr_per_s(self) -> float:
        """Issue peak: one warp instruction per scheduler per clock."""
        return self.sms * self.schedulers_per_sm * self.clock_Hz

    @property
    def lane_instr_per_s(self) -> float:
        return 32 * self.warp_instr_per_s

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity where FP16 tensor peak meets DRAM bandwidth."""
        return self.fp16_tensor_flops_per_s / self.dram_bandwidth_Bps


@dataclass(frozen=True)
class Accelerator:
    """A BCQ/FP-INT accelerator as the FIGLUT paper evaluates it (see hardware.toml for the kinds)."""
    name: str
    sources: Mapping[str, str]
    kind: str
    clock_Hz: float
    node_nm: float
    pe_count: int
    datapath_units: int
    bit_serial: bool
    mac_weight_bits: int
    min_storage_bits: float
    tile_K: int
    tile_N: int
    weight_load_cycles: int
    fill_drain_cycles: int
    group_size: int
    dram_pJ_per_bit: float
    sram_pJ_per_bit: float
    fp16_add_pJ: float
    datapath_pJ: float
    mu: int = 1
    racs_per_lut: int = 0
    lut_passdown_pes: int = 0
    lut_build_adds: int = 0
    alignment_bits: int = 0
    notes: str = ""

    KINDS = ("figlut", "figna", "ifpu")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise ValueError(f"{self.name}.kind: must be one of {self.KINDS}, got {self.kind!r}")
        if self.kind == "figlut" and not (self.mu >= 1 and self.racs_per_lut >= 1 and self.lut_passdown_pes >= 1):
            raise ValueError(f"{self.name}: a figlut design needs mu, racs_per_lut and lut_passdown_pes >= 1")
        if self.kind == "ifpu" and self.alignment_bits < 1:
            raise ValueError(f"{self.name}.alignment_bits: an ifpu design needs the alignment width")
        if self.tile_K * self.tile_N != self.datapath_units * self.weights_per_event:
            raise ValueError(f"{self.name}: tile_K x tile_N must equal the weights the datapath holds per pass "
                             f"({self.datapath_units} units x {self.weights_per_event} weights)")

    @property
    def weights_per_event(self) -> int:
        """Weights (of one plane, for bit-serial designs) one datapath event consumes."""
        return self.mu if self.kind == "figlut" else 1

    @property
    def binary_lanes(self) -> int:
        """Weight-bit x activation products per cycle at full utilisation."""
        return self.datapath_units * self.weights_per_event * (1 if self.bit_serial else self.mac_weight_bits)

    def peak_ops_per_s(self, q: float) -> float:
        """Useful ops/s (2 per MAC) at q-bit weights, ignoring fill, drain and weight loads."""
        if self.bit_serial:
            macs_per_cycle = self.binary_lanes / q
        else:
            macs_per_cycle = self.datapath_units / -(-q // self.mac_weight_bits)
        return 2.0 * macs_per_cycle * self.clock_Hz


Device = GPU | Accelerator


def load_hardware(path: str | Path = HARDWARE_TOML, extra: tuple | list = ()) -> dict[str, Device]:
    """{name: spec} from the TOML at ``path`` and any ``extra`` files (later files may add devices, not redefine)."""
    devices: dict[str, Device] = {}
    for p in (path, *extra):
        data = read_toml(p)
        unknown = set(data) - {"gpu", "accelerator"}
        if unknown:
            raise ValueError(f"{p}: top-level tables must be [gpu.NAME] or [accelerator.NAME], got {sorted(unknown)}")
        for section, cls in (("gpu", GPU), ("accelerator", Accelerator)):
            for name, table in data.get(section, {}).items():
                if _key(name) in {_key(n) for n in devices}:
                    raise ValueError(f"{p}: device {name!r} is defined twice")
                devices[name] = build(cls, name, table, f"{p.name if isinstance(p, Path) else p}:{section}.{name}")
    return devices


@functools.lru_cache(maxsize=None)
def _default_devices() -> dict[str, Device]:
    return load_hardware()


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def get_device(name: str | Device, devices: Mapping[str, Device] | None = None) -> Device:
    """A spec by name, forgiving case, spaces and dashes ('h100 sxm'), or by a unique part of it
    ('H100', '4090'); a spec passes through."""
    if isinstance(name, (GPU, Accelerator)):
        return name
    devices = _default_devices() if devices is None else devices
    keyed = {_key(n): d for n, d in devices.items()}
    key = _key(name)
    if key in keyed:
        return keyed[key]
    partial = [d for k, d in keyed.items() if key and key in k]
    if len(partial) == 1:
        return partial[0]
    raise ValueError(f"device: {'ambiguous' if partial else 'unknown'} device {name!r}; known: {', '.join(devices)}")

"""sim/ hardware and kernel data: every number sourced, units consistent, users can add devices."""
import dataclasses

import pytest

from sim.hardware import GPU, Accelerator, get_device, load_hardware
from sim.kernels import default_kernels, load_kernels

NOT_NUMBERS = {"name", "sources", "notes", "kind"}


def test_every_device_loads_with_a_source_for_every_number():
    devices = load_hardware()
    assert {"A100-80GB", "H100-SXM", "H200", "RTX-4090", "L40S", "FIGLUT", "FIGNA", "iFPU"} <= set(devices)
    for name, dev in devices.items():
        for f in dataclasses.fields(dev):
            value = getattr(dev, f.name)
            if f.name in NOT_NUMBERS or value is None:
                continue
            explicit = f.name in dev.sources
            default = f.default is not dataclasses.MISSING and value == f.default
            assert explicit or default, f"{name}.{f.name} has no source"
            if explicit:
                assert dev.sources[f.name].strip()


def test_every_kernel_constant_has_a_source_and_fits_name_their_data():
    kc = default_kernels()
    for section in dataclasses.fields(kc):
        consts = getattr(kc, section.name)
        for f in dataclasses.fields(consts):
            if f.name in NOT_NUMBERS:
                continue
            src = consts.sources[f.name]
            assert src.strip(), f"{section.name}.{f.name}"
            if src.startswith("fitted"):
                assert any(data in src for data in ("ANCHORS", "gemv_h100.json", "gemv_h200.json", "same fit")), \
                    f"{section.name}.{f.name}: a fit names its data"


def test_derived_peaks_match_the_papers_table():
    h100 = get_device("H100-SXM")
    assert isinstance(h100, GPU)
    assert h100.smem_bytes_per_clk == 128
    assert h100.smem_bandwidth_Bps == pytest.approx(33e12, rel=0.02)  # PAPERS.md: H100 ~ 33 TB/s in all
    assert h100.warp_instr_per_s == pytest.approx(132 * 4 * 1.98e9)
    assert h100.ridge_flops_per_byte == pytest.approx(989e12 / 3.35e12)
    # 128 FP32 lanes x 2 (FMA) x 2 (half2) per SM per clock: the datasheet's FP16 CUDA-core peak
    assert h100.lane_instr_per_s * 4 == pytest.approx(h100.fp16_cuda_flops_per_s, rel=0.01)


def test_accelerators_are_sized_for_equal_throughput_at_4_bits():
    accs = [get_device(n) for n in ("FIGLUT", "FIGNA", "iFPU")]
    assert all(isinstance(a, Accelerator) for a in accs)
    peaks = {a.name: a.peak_ops_per_s(4) for a in accs}
    assert len(set(peaks.values())) == 1, peaks
    assert get_device("FIGLUT").binary_lanes == get_device("iFPU").binary_lanes == 16384
    assert get_device("FIGLUT").peak_ops_per_s(2) == 2 * peaks["FIGLUT"]   # cycles scale with planes
    assert get_device("FIGNA").peak_ops_per_s(2) == peaks["FIGNA"]         # padded to 4 bits


def test_device_names_are_forgiving_but_not_ambiguous():
    assert get_device("h100 sxm").name == "H100-SXM"
    assert get_device("H100").name == "H100-SXM"
    assert get_device("RTX 4090").name == "RTX-4090"
    assert get_device("figlut").name == "FIGLUT"
    with pytest.raises(ValueError, match="ambiguous"):
        get_device("H")
    with pytest.raises(ValueError, match="unknown device"):
        get_device("TPUv9")


H20X = """
[gpu.MyGPU]
notes = "a what-if device"
sms = { value = 100, source = "mine" }
clock_Hz = { value = 2e9, source = "mine" }
dram_bandwidth_Bps = { value = 8e12, source = "mine" }
l2_bytes = { value = 1e8, source = "mine" }
smem_bytes_per_sm = { value = 262144, source = "mine" }
smem_bytes_per_block_max = { value = 261120, source = "mine" }
smem_banks = { value = 32, source = "mine" }
smem_bank_bytes = { value = 4, source = "mine" }
schedulers_per_sm = { value = 4, source = "mine" }
fp16_tensor_flops_per_s = { value = 2e15, source = "mine" }
fp16_cuda_flops_per_s = { value = 1e14, source = "mine" }
launch_s = { value = 2e-6, source = "mine" }
memory_bytes = { value = 192e9, source = "mine" }
"""


def test_a_user_adds_a_device_with_one_toml_entry(tmp_path):
    extra = tmp_path / "mine.toml"
    extra.write_text(H20X)
    devices = load_hardware(extra=[extra])
    dev = get_device("mygpu", devices)
    assert dev.l2_bytes == 100_000_000 and isinstance(dev.l2_bytes, int)
    from sim import layer_cost
    assert float(layer_cost(dev, "bcq_lut", 8192, 8192, 1, 2).time_s) > 0


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('sms = { value = 100, source = "mine" }', "sms = 100"), "needs a source"),
    (lambda t: t.replace('source = "mine" }\nclock', 'source = "" }\nclock'), "non-empty"),
    (lambda t: t + 'warp_size = { value = 32, source = "x" }\n', "unknown field"),
    (lambda t: t.replace('launch_s = { value = 2e-6, source = "mine" }\n', ""), "missing field"),
    (lambda t: t.replace("MyGPU", "H100-SXM"), "defined twice"),
    (lambda t: t.replace('sms = { value = 100,', 'sms = { value = 100.5,'), "whole number"),
])
def test_bad_entries_are_refused_with_the_rule_they_broke(tmp_path, edit, message):
    extra = tmp_path / "bad.toml"
    extra.write_text(edit(H20X))
    with pytest.raises(ValueError, match=message):
        load_hardware(extra=[extra])


def test_kernel_file_sections_are_checked(tmp_path):
    bad = tmp_path / "k.toml"
    bad.write_text('[cublas_fp16]\nmemory_efficiency = { value = 0.8, source = "x" }\n')
    with pytest.raises(ValueError, match="sections must be exactly"):
        load_kernels(bad)

"""`trainer.precision: auto` picks bf16 autocast only where the CPU multiplies bf16 natively."""

import pytest
from omegaconf import OmegaConf

from cliplab.utils import host_precision
from cliplab.utils.host_precision import auto_precision


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, "bf16-mixed"),  # AMD Zen 4, Intel Cooper Lake
        ({"avx2", "avx512f", "amx_tile", "amx_bf16"}, "bf16-mixed"),  # Intel Sapphire Rapids
        ({"avx2", "avx512f", "avx512bw"}, "32-true"),  # AVX-512 without bf16: emulated, slower
        (set(), "32-true"),
    ],
)
def test_cpu_rule_follows_the_flags(flags, expected):
    precision, reason = auto_precision("cpu", flags)
    assert precision == expected and reason


def test_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    monkeypatch.setattr(host_precision, "CPUINFO", cpuinfo)
    assert host_precision.cpu_flags() == {"fpu", "sse2", "avx512_bf16"}
    assert auto_precision("cpu") == auto_precision("cpu", {"avx512_bf16"})
    monkeypatch.setattr(host_precision, "CPUINFO", tmp_path / "absent")
    assert auto_precision("cpu")[0] == "32-true"


def test_the_cpu_preset_asks_for_auto(cfg_factory):
    assert cfg_factory([]).trainer.precision == "auto"


@pytest.mark.parametrize(
    ("overrides", "flags", "epochs", "batch"),
    [
        ([], {"amx_bf16"}, 14, 256),  # auto picks bf16: the faster step fits more epochs, at a larger batch
        ([], set(), 7, 128),  # auto picks fp32
        (["trainer.precision=32-true"], {"amx_bf16"}, 7, 128),  # an explicit precision wins over the host
        (["trainer.precision=bf16-mixed"], set(), 14, 256),
        (["trainer.max_epochs=3", "data.batch_size=64"], {"amx_bf16"}, 3, 64),
        (["data=emoji"], {"amx_bf16"}, 14, 128),  # the emoji set keeps its own batch
    ],
)
def test_the_cpu_preset_sizes_its_run_by_precision(cfg_factory, monkeypatch, overrides, flags, epochs, batch):
    monkeypatch.setattr(host_precision, "cpu_flags", lambda: flags)
    cfg = cfg_factory(overrides)
    assert (cfg.trainer.max_epochs, cfg.data.batch_size) == (epochs, batch)
    # the saved config (resolved) holds the numbers, not the interpolations
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert (resolved["trainer"]["max_epochs"], resolved["data"]["batch_size"]) == (epochs, batch)

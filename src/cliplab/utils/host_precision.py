"""`trainer.precision: auto`: the faster precision for the host the run starts on.

On a CPU, bf16 autocast pays only where the cores multiply bf16 natively (AVX512-BF16 or AMX, read from the
CPU flags): there a bf16 matmul runs several times faster than fp32, and the default model's whole step
2.3x faster on a Xeon with AMX (`python -m bench train_step --only "tiny b128"` measures both ways).
Elsewhere bf16 is emulated and slower, so fp32. The rule reads flags, not a timing,
so every rank of a run picks the same. On a GPU: bf16 where supported, else fp16 with loss scaling.
"""

from pathlib import Path

import torch

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def auto_precision(accelerator: str, flags: set[str] | None = None) -> tuple[str, str]:
    """(Lightning precision, the reason) for `trainer.precision: auto` on `accelerator`."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            return "16-mixed", "this GPU has no bf16"
        return "bf16-mixed", "GPU"
    native = sorted(set(CPU_BF16_FLAGS) & (cpu_flags() if flags is None else flags))
    if native:
        return "bf16-mixed", f"the CPU multiplies bf16 natively ({', '.join(native)})"
    return "32-true", "the CPU has no native bf16 (no amx_bf16 / avx512_bf16): bf16 would be emulated"


def value_for_precision(half_precision_value, fp32_value, trainer):
    """A recipe setting (the run's length, its batch) for one time budget on hosts whose speeds differ by
    the precision `auto` picks: `half_precision_value` where the run multiplies in bf16 or fp16,
    `fp32_value` where in fp32 (`trainer` is the trainer config; `auto` is read the way the run will
    resolve it)."""
    precision = str(trainer.get("precision", "32-true"))
    if precision == "auto":
        precision = auto_precision(str(trainer.get("accelerator", "auto")))[0]
    return half_precision_value if "16" in precision else fp32_value

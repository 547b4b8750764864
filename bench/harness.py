"""Side-by-side benchmark harness: cliplab vs open_clip, interleaved process runs, medians, gates, MFU.

A benchmark module describes `Case`s and implements a worker (`python -m <module> --worker '<json>'`)
that runs one side once and prints one JSON line. The harness runs the two sides alternately in fresh
processes (so neither inherits the other's caches, allocator state or thermal luck), checks a correctness
gate on the first pair before any timing counts, and reports the median of the remaining statistics.
"""

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

SIDES = ("cliplab", "open_clip")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Case:
    """One row of the table: the same `spec` runs on both sides (the worker gets `side` added)."""

    name: str
    module: str  # python module with the worker, e.g. "bench.bench_train_step"
    spec: dict
    metric: str = "samples_per_s"  # the worker's result key that is compared
    higher_is_better: bool = True
    unit: str = "samples/s"
    flops_per_sample: float | None = None  # counted once (cliplab model), used for both sides
    peak_key: str | None = None  # which measured matmul peak MFU divides by ("fp32" / "bf16")
    gate_key: str | None = "first_loss"  # result key compared across sides before timing counts
    gate_rtol: float = 1e-4
    # Further rows from the same runs, lower is better: (name suffix, result key, unit), e.g. peak memory
    also: tuple[tuple[str, str, str], ...] = ()


@dataclass
class Row:
    case: str
    unit: str
    metric: str
    median: dict[str, float | None]
    spread: dict[str, tuple[float, float] | None]
    ratio: float | None  # cliplab over open_clip, "better" direction > 1
    mfu: dict[str, float | None]
    warmup_s: dict[str, float | None]
    gate_ok: bool
    gate_message: str
    runs: int
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- statistics
def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else None


def ratio(ours: float | None, theirs: float | None, higher_is_better: bool = True) -> float | None:
    """How many times better cliplab is (> 1: cliplab ahead), whatever the metric's direction."""
    if not ours or not theirs:
        return None
    return ours / theirs if higher_is_better else theirs / ours


def mfu(
    flops_per_sample: float | None, samples_per_s: float | None, peak_flops: float | None
) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the measured matmul peak."""
    if not flops_per_sample or not samples_per_s or not peak_flops:
        return None
    return flops_per_sample * samples_per_s / peak_flops


def check_gate(ours: float | None, theirs: float | None, rtol: float) -> tuple[bool, str]:
    """Both sides must produce the same value (e.g. the first-step loss from the same weights)."""
    if ours is None or theirs is None or not math.isfinite(ours) or not math.isfinite(theirs):
        return False, f"missing or non-finite: cliplab={ours} open_clip={theirs}"
    diff = abs(ours - theirs) / max(abs(theirs), 1e-12)
    ok = diff <= rtol
    return ok, f"rel diff {diff:.1e} {'<=' if ok else '>'} {rtol:.0e} ({ours:.6g} vs {theirs:.6g})"


def interleaved_order(rep: int) -> tuple[str, ...]:
    """Alternate which side goes first, so drift in machine load hits both sides alike."""
    return SIDES if rep % 2 == 0 else SIDES[::-1]


# ---------------------------------------------------------------------------------------------- processes
def run_process(module: str, spec: dict, timeout: float = 3600) -> dict:
    """Runs one worker in a fresh interpreter and returns its JSON result (last stdout line)."""
    cmd = [sys.executable, "-m", module, "--worker", json.dumps(spec)]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=timeout)
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise RuntimeError(f"worker {module} {spec.get('side')} failed ({proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def run_case(
    case: Case, reps: int, runner: Callable[[str, dict], dict] = run_process, log=print
) -> dict[str, list[dict]]:
    """`reps` interleaved runs per side. The gate is checked after the first pair: a failing case stops
    there (its timings never count)."""
    results: dict[str, list[dict]] = {side: [] for side in SIDES}
    for rep in range(reps):
        for side in interleaved_order(rep):
            try:
                out = runner(case.module, {**case.spec, "side": side})
            except Exception as err:  # one broken side must not take the whole table down
                out = {"error": str(err)}
            results[side].append(out)
            log(f"  [{case.name}] rep {rep + 1}/{reps} {side}: {_brief(out, case.metric)}")
        if rep == 0 and case.gate_key and not gate_of(case, results)[0]:
            break
    return results


def _brief(out: dict, metric: str) -> str:
    if "error" in out:
        return "ERROR " + out["error"].strip().splitlines()[-1][:200]
    value = out.get(metric)
    return f"{metric}={value:.4g}" if isinstance(value, int | float) else f"{metric}={value}"


def gate_of(case: Case, results: dict[str, list[dict]]) -> tuple[bool, str]:
    if any("error" in r for side in SIDES for r in results[side][:1]):
        errs = [r["error"].strip().splitlines()[-1] for s in SIDES for r in results[s][:1] if "error" in r]
        return False, "error: " + "; ".join(errs)
    if not case.gate_key:
        return True, "no gate"
    first = {side: results[side][0].get(case.gate_key) for side in SIDES}
    return check_gate(first["cliplab"], first["open_clip"], case.gate_rtol)


def summarize_all(case: Case, results: dict[str, list[dict]], peaks: dict[str, float]) -> list[Row]:
    """The case's row, then one row per `also` metric read from the same runs (same gate)."""
    derived = [
        replace(case, name=f"{case.name}, {suffix}", metric=key, unit=unit, higher_is_better=False)
        for suffix, key, unit in case.also
    ]
    return [summarize(c, results, peaks) for c in (case, *derived)]


def summarize(case: Case, results: dict[str, list[dict]], peaks: dict[str, float]) -> Row:
    gate_ok, gate_message = gate_of(case, results)
    med, spread, mfus, warm = {}, {}, {}, {}
    for side in SIDES:
        good = [r for r in results[side] if "error" not in r]
        values = [r.get(case.metric) for r in good if r.get(case.metric) is not None]
        med[side] = median(values) if gate_ok else None
        spread[side] = (min(values), max(values)) if values and gate_ok else None
        warm[side] = median([r.get("warmup_s") for r in good])
        peak = peaks.get(case.peak_key) if case.peak_key else None
        mfus[side] = mfu(case.flops_per_sample, med[side], peak) if case.metric == "samples_per_s" else None
    extra = {}
    for key in ("step_s", "peak_rss_bytes", "step_rss_rise_bytes", "peak_cuda_bytes", "setup_s"):
        per_side = {s: median([r.get(key) for r in results[s] if "error" not in r]) for s in SIDES}
        if any(v is not None for v in per_side.values()):
            extra[key] = per_side
    return Row(
        case=case.name,
        unit=case.unit,
        metric=case.metric,
        median=med,
        spread=spread,
        ratio=ratio(med["cliplab"], med["open_clip"], case.higher_is_better) if gate_ok else None,
        mfu=mfus,
        warmup_s=warm,
        gate_ok=gate_ok,
        gate_message=gate_message,
        runs=min(len(results[s]) for s in SIDES),
        extra=extra,
    )


# ---------------------------------------------------------------------------------------------- machine
def matmul_peak(dtype: torch.dtype = torch.float32, device: str = "cpu", n: int | None = None, reps: int = 5):
    """Best FLOP/s of a square matmul: the ceiling MFU is measured against (same threads as the runs)."""
    n = n or (8192 if device.startswith("cuda") else 2048)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b  # first call pays for kernel selection and page faults
    sync()
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def machine_info(device: str, threads: int) -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import open_clip

        info["open_clip"] = open_clip.__version__
    except ImportError:
        info["open_clip"] = None
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---------------------------------------------------------------------------------------------- reports
def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_metric(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value / 2**20:.0f} MiB"
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def markdown(rows: list[Row], info: dict, peaks: dict[str, float], notes: list[str] | None = None) -> str:
    lines = [
        "# cliplab vs open_clip",
        "",
        f"torch {info['torch']}, open_clip {info.get('open_clip')}, {info['device']}"
        f"{' (' + info['gpu'] + ')' if info.get('gpu') else ''}, {info['threads']} threads, "
        f"{info['processor']} ({info['cpu_count']} CPUs)",
        "Matmul peak (measured in this run): "
        + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()),
        "",
        "Median of interleaved process runs; ratio > 1 means cliplab is better (faster, or less memory).",
        "",
        "| benchmark | unit | cliplab | open_clip | ratio | MFU cliplab | MFU open_clip "
        "| step s (cliplab / open_clip) | warm-up s (cliplab / open_clip) | runs | gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio_text = f"{r.ratio:.2f}x" if r.ratio else "-"
        mfu_text = [f"{100 * r.mfu[s]:.0f}%" if r.mfu[s] else "-" for s in SIDES]
        warm = " / ".join(_fmt(r.warmup_s[s], 2) for s in SIDES)
        step_s = r.extra.get("step_s", {})
        step = " / ".join(_fmt(step_s.get(s), 3) for s in SIDES)
        gate = "ok" if r.gate_ok else "FAIL: " + r.gate_message
        lines.append(
            f"| {r.case} | {r.unit} | {_fmt_metric(r.median['cliplab'], r.unit)} "
            f"| {_fmt_metric(r.median['open_clip'], r.unit)} | {ratio_text} | {mfu_text[0]} | {mfu_text[1]} "
            f"| {step} | {warm} | {r.runs} | {gate} |"
        )
    cuda_rows = [r for r in rows if any(r.extra.get("peak_cuda_bytes", {}).values())]
    if cuda_rows:
        lines += ["", "Peak GPU memory allocated (cliplab / open_clip):"]
        for r in cuda_rows:
            mem = r.extra["peak_cuda_bytes"]
            lines.append(f"- {r.case}: " + " / ".join(_fmt_metric(mem.get(s), "bytes") for s in SIDES))
    for note in notes or []:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def write_results(
    rows: list[Row],
    info: dict,
    peaks: dict[str, float],
    raw: dict,
    out_dir: Path = RESULTS_DIR,
    notes: list[str] | None = None,
) -> tuple[Path, Path]:
    """`results-<time>.json` / `.md` plus `latest.json` / `latest.md` in bench/results/ (git-ignored)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = markdown(rows, info, peaks, notes)
    payload = {
        "machine": info,
        "matmul_peak_flops": peaks,
        "rows": [asdict(r) for r in rows],
        "raw": raw,
        "notes": notes or [],
    }
    paths = []
    for name in (f"results-{stamp}", "latest"):
        (out_dir / f"{name}.md").write_text(text)
        (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
        paths.append(out_dir / f"{name}.md")
    return paths[0], paths[0].with_suffix(".json")

"""`python -m bench [names...] [--quick] [--reps N] [--device auto|cpu|cuda] [--levers [NAMES]]` (`make bench ARGS=...`).

Runs the selected benchmarks side by side with open_clip and writes bench/results/latest.{md,json}.
Names: train_step, end_to_end, memory, loss, data, zeroshot; every one gives rows of the same table.
Default: all of them. `learning` (learning parity: loss curves and held-out accuracy of both sides over a
300-step run, bench/bench_learning.py) writes a report of its own and runs only when named.
"""

import argparse
import os
import sys
import tempfile

import torch

from bench import harness
from bench.bench_train_step import LEVERS

ROWS = ("train_step", "end_to_end", "memory", "loss", "data", "zeroshot")
REPORTS = ("learning",)  # not rows of the speed table: a report of its own, run only when named
SHARED_NOTE = (
    "Timings depend on the machine being otherwise idle; a shared machine makes them noisy "
    "(see the min-max spread in the JSON)."
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"subset of {', '.join(ROWS)}")
    parser.add_argument("--quick", action="store_true", help="small cases, fewer runs: a smoke test")
    parser.add_argument("--reps", type=int, default=None, help="process runs per side (default 5, quick 3)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads on both sides (default: all)"
    )
    parser.add_argument(
        "--levers",
        nargs="?",
        const=",".join(LEVERS),
        default="",
        help=f"train_step also with these levers (comma list of {', '.join(LEVERS)}; default all)",
    )
    parser.add_argument("--only", default="", help="run only the rows whose name contains this text")
    parser.add_argument("--note", action="append", default=[], help="a line added under the table")
    args = parser.parse_args(argv)
    bad_levers = {x for x in args.levers.split(",") if x} - set(LEVERS)
    if bad_levers:
        parser.error(f"unknown levers {sorted(bad_levers)}; choose from {', '.join(LEVERS)}")
    unknown = set(args.names) - set(ROWS) - set(REPORTS)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {ROWS + REPORTS}")
    return args


def resolve_device(choice: str) -> str | None:
    """`cuda` when asked for or (auto) available; None when cuda was asked for but is missing."""
    if choice == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    return "cpu" if choice == "auto" else None


def collect_cases(names, device, threads, quick, levers, state_dir) -> list:
    import importlib

    out = []
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        extra = {"levers": levers} if name == "train_step" else {}
        out += module.cases(device, threads, quick, state_dir, **extra)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    status = 0
    if "learning" in args.names:
        from bench import bench_learning

        status = bench_learning.main(["--quick"] if args.quick else [])
        args.names = [n for n in args.names if n != "learning"]
        if not args.names:
            return status
    device = resolve_device(args.device)
    if device is None:
        print("--device cuda: no CUDA device here; skipping (nothing to run).")
        return 0
    threads = args.threads or (torch.get_num_threads() if device == "cpu" else 1)
    torch.set_num_threads(threads)
    reps = args.reps or (3 if args.quick else 5)
    names = args.names or list(ROWS)
    info = harness.machine_info(device, threads)
    print(f"cliplab bench on {device}, {threads} threads, {reps} runs per side; torch {info['torch']}")

    peaks = measure_peaks(device)
    done, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="cliplab-bench-") as state_dir:
        cases = collect_cases(names, device, threads, args.quick, args.levers, state_dir)
        for case in [c for c in cases if args.only in c.name]:
            print(f"{case.name}:", flush=True)
            results = harness.run_case(case, reps, log=lambda m: print(m, flush=True))
            raw[case.name] = results
            done.append(case)
    # The peak is measured again at the end: the better of the two is the ceiling (less shared-load luck).
    for key, value in measure_peaks(device).items():
        peaks[key] = max(peaks[key], value)
    rows = [row for case in done for row in harness.summarize_all(case, raw[case.name], peaks)]
    notes = [SHARED_NOTE, *args.note]
    md_path, json_path = harness.write_results(rows, info, peaks, raw, notes=notes)
    print()
    print(md_path.read_text())
    print(f"written {md_path} and {json_path}")
    return status or (0 if all(r.gate_ok for r in rows) else 1)


def measure_peaks(device: str) -> dict[str, float]:
    return {
        "fp32": harness.matmul_peak(torch.float32, device),
        "bf16": harness.matmul_peak(torch.bfloat16, device),
    }


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())

"""The entry point of each `bench/bench_<name>.py` module (`python -m bench.bench_<name>`): a measurement
worker when the harness starts it, else `python -m bench <name>` in a process of its own (the command line
imports the benchmark modules, so they do not import it back)."""

import argparse
import json
import subprocess
import sys
from collections.abc import Callable


def benchmark_main(name: str, doc: str | None, worker: Callable[[dict], dict]) -> int | None:
    """Entry point of a `bench/bench_<name>.py` script: `--worker SPEC` runs one measurement process
    (the harness starts these), anything else runs the benchmark through `python -m bench <name>`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return None
    return subprocess.call([sys.executable, "-m", "bench", name, *rest])

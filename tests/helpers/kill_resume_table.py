"""Fault-injection table rows for docs/faults.md: SIGKILL of both ranks at N random steps, each resumed
and compared with one uninterrupted run (the same runs as tests/test_runs_survive.py).

    .venv/bin/python -m tests.helpers.kill_resume_table 5
"""

import random
import sys
import tempfile
from pathlib import Path

from tests.test_runs_survive import TRAIN_SIZES, VAL_SIZES, launch, overrides, probes, write_shards


def compare(resumed: list[dict], straight: list[dict], saved: int) -> tuple[int, int, bool]:
    """(samples missing, samples repeated, parameters equal) over both ranks, after the checkpoint."""
    missing = repeated = 0
    equal = True
    for rank in (0, 1):
        want = [s["tokens"] for s in straight[rank]["steps"] if s["step"] > saved]
        got = [s["tokens"] for s in resumed[rank]["steps"]]
        missing += len(set(want) - set(got))
        repeated += len(got) - len(set(got) & set(want))
        a, b = straight[rank]["params"], resumed[rank]["params"]
        equal &= all(abs(a[k] - b[k]) <= 1e-6 * abs(a[k]) + 1e-9 for k in a)
    return missing, repeated, equal


def main(n: int) -> None:
    root = Path(tempfile.mkdtemp())
    shards = (
        write_shards(root / "train", TRAIN_SIZES, 0, corrupt={40}),
        write_shards(root / "val", VAL_SIZES, 1),
    )
    assert launch(overrides(shards, root / "straight")).returncode == 0
    straight = probes(root / "straight")
    print(
        "| kill at step | last checkpoint | finished | batches missing | batches repeated | parameters equal |"
    )
    print("|---:|---:|---|---:|---:|---|")
    for step in sorted(random.sample(range(1, 22), n)):
        run = root / f"kill{step}"
        launch(overrides(shards, run, f"+callbacks.probe.kill_at_step={step}"))
        # checkpoints every 3 steps, written after the probe's kill in the same step (Lightning runs
        # checkpoint callbacks last); none before step 3: the resumed run then starts from scratch
        saved = (step - 1) // 3 * 3
        resumed_proc = launch(overrides(shards, run, "ckpt_path=last"))
        resumed = probes(run)
        missing, repeated, equal = compare(resumed, straight, saved)
        print(
            f"| {step} | {saved} | {resumed_proc.returncode == 0 and resumed[0]['finished']} | {missing} | {repeated} | {equal} |"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)

"""Runs a test script in two CPU processes under torchrun, with this checkout's package and tests first
on the path (the editable install may point at another checkout)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def torchrun(script: Path, *args, timeout: int = 300) -> str:
    """`python -m torch.distributed.run --standalone --nproc_per_node 2 script args`; fails the test with
    the end of its stderr unless every process exits cleanly; returns what they printed (stdout + stderr)."""
    path = os.pathsep.join(p for p in (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(script), *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr

"""Runs a test script in two CPU processes under torchrun, with this checkout's package and tests first
on the path (the editable install may point at another checkout)."""

import os
import signal
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
    # Its own process group: a hung run is killed whole on timeout (killing torchrun alone would leave
    # its workers spinning in a collective, taking the cores from every later test).
    with subprocess.Popen([*cmd, str(script), *map(str, args)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:  # fmt: skip
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise AssertionError(f"torchrun {script.name} hung for {timeout} s:\n{stderr[-4000:]}") from None
    proc = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr

"""keep_freed_memory: a freed activation-sized buffer is reused, not page-faulted in again every step."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from cliplab.utils.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def step():
    x = torch.empty(64 << 20, dtype=torch.uint8)  # 64 MiB: above glibc's largest default mmap threshold
    x.fill_(1)
for _ in range(8):  # warm-up: the heap grows until freed blocks can be reused (torch asks memalign)
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")
def test_freed_buffers_are_reused_without_page_faults():
    applied, kept = _faults("keep")
    _, default = _faults("default")
    assert applied == "True"
    pages = (64 << 20) // 4096
    assert default >= 2 * pages  # re-mapped and faulted in at every step
    assert kept < pages // 10

"""keep_freed_memory: freed activation-sized buffers are reused, not page-faulted in again every step."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from cliplab.utils.host_memory import keep_freed_memory
mode, mib, count, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
applied = keep_freed_memory() if mode == "keep" else None
def step():  # a step's activations: several buffers alive together, all freed at its end
    buffers = [torch.empty(mib << 20, dtype=torch.uint8) for _ in range(count)]
    for x in buffers:
        x.fill_(1)
# The heap grows until freed blocks can be reused (torch asks memalign); how many steps that takes depends
# on where ASLR put the heap: 2-8 steps in 130 runs of both tests' sizes, hence 12 warm-up steps.
for _ in range(warmup):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, mib: int, count: int = 1, warmup: int = 12) -> tuple[str, int]:
    args = [sys.executable, "-c", SCRIPT, mode, str(mib), str(count), str(warmup)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")


@linux_only
def test_freed_buffers_are_reused_without_page_faults():
    applied, kept = _faults("keep", 64)  # 64 MiB: above glibc's largest default mmap threshold
    _, default = _faults("default", 64)
    assert applied == "True"
    pages = (64 << 20) // 4096
    assert default >= 2 * pages  # re-mapped and faulted in at every step
    assert kept < pages // 10


@linux_only
def test_a_working_set_above_a_gigabyte_is_not_trimmed_away():
    # 3 x 400 MiB freed together at the end of each step: more than any finite trim threshold we could pick
    # would keep, so only never trimming avoids faulting the whole step in again (as a ViT-B/32 step did).
    applied, kept = _faults("keep", 400, count=3)
    assert applied == "True"
    assert kept < (400 << 20) // 4096 // 10


RETURN_SCRIPT = """
import re, torch
from cliplab.utils.host_memory import keep_freed_memory, return_freed_memory
def rss_mib():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
keep_freed_memory()
blocks = [torch.ones(2 << 20, dtype=torch.uint8) for _ in range(100)]  # 200 MiB served from the heap
del blocks
kept = rss_mib()
return_freed_memory()
print(kept, rss_mib())
"""


@linux_only
def test_returning_freed_memory_mid_run_hands_the_heap_back():
    out = subprocess.run([sys.executable, "-c", RETURN_SCRIPT], capture_output=True, text=True, check=True)
    kept, after = map(int, out.stdout.split())
    assert kept - after > 150, (kept, after)  # the 200 MiB the heap kept leave the resident set

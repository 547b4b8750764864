"""Wall time of every aten op a CPU training step runs, without torch.profiler (bench.profile_step --timer ops).

On some hosts the profiler itself slows the step down unevenly: on a 2-core Xeon with AMX the tiny bf16 step
took 455 ms profiled against 205 ms without, and the inflation fell on a few ops (the token embedding's
gradient fill read 79 ms where the same fill takes 2 ms). A `TorchDispatchMode` that only reads the clock
around each op adds its own Python time between ops (the same step: 257 ms timed) but none inside them: the
per-op times summed to 214 ms, against 205 ms for the whole unprofiled step. CPU only: on a GPU an op's call
returns before its kernel has run. Without the profiler's ranges, an optimizer's plain aten ops (lerp,
sqrt, div of a non-fused AdamW) count as other ops; fused and foreach ones are the optimizer's.

`OpTimer` has the profiler's `start()` / `stop()`, and `op_breakdown` reads either.
"""

import time
from collections import defaultdict

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


class OpTimer(TorchDispatchMode):
    """Per aten op (name without overload): total wall seconds, calls and FLOPs (where torch counts them)."""

    def __init__(self):
        super().__init__()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.flops: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        start = time.perf_counter()
        out = func(*args, **kwargs)
        elapsed = time.perf_counter() - start
        name = func._schema.name  # "aten::mm"
        if name.startswith("profiler::"):  # record_function's markers (Optimizer.step ...): no work
            return out
        self.seconds[name] += elapsed
        self.calls[name] += 1
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops[name] += count(*args, **kwargs, out_val=out)
        return out

    def start(self) -> None:
        self.__enter__()

    def stop(self) -> None:
        self.__exit__(None, None, None)

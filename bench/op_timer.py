"""Wall time of every aten op a CPU training step runs, without torch.profiler (bench.profile_step --timer ops).

On some hosts the profiler itself slows the step down unevenly: on a 2-core Xeon with AMX the tiny bf16 step
took 455 ms profiled against 205 ms without, and the inflation fell on a few ops (the token embedding's
gradient fill read 79 ms where the same fill takes 2 ms). A `TorchDispatchMode` that only reads the clock
around each op adds its own Python time between ops (the same step: 257 ms timed) but none inside them: the
per-op times summed to 214 ms, against 205 ms for the whole unprofiled step. CPU only: on a GPU an op's call
returns before its kernel has run. Without the profiler's ranges, an optimizer's plain aten ops (lerp,
sqrt, div of a non-fused AdamW) count as other ops; fused and foreach ones are the optimizer's.

`OpTimer` has the profiler's `start()` / `stop()`, and `op_breakdown` reads either. It also keeps each matmul's
operand shapes (`MatmulShape`), so a breakdown can show which matmuls run slowly inside the step and
`bench.matmul_shapes` can time the same shapes alone.
"""

import time
from collections import defaultdict
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


class MatmulShape(NamedTuple):
    """One matmul call's form: op, the two multiplied operands' shapes, whether each is a transposed view
    (last dimension not contiguous), dtype, and whether a bias or input is added (addmm, baddbmm)."""

    op: str
    a: tuple[int, ...]
    b: tuple[int, ...]
    a_transposed: bool
    b_transposed: bool
    dtype: str
    added: bool

    @classmethod
    def of(cls, name: str, args: tuple) -> "MatmulShape":
        added = name in ("aten::addmm", "aten::baddbmm")
        a, b = args[1:3] if added else args[:2]
        return cls(name, tuple(a.shape), tuple(b.shape), a.stride(-1) != 1, b.stride(-1) != 1,
                   str(a.dtype).removeprefix("torch."), added)  # fmt: skip

    def label(self) -> str:
        show = lambda shape, t: "x".join(map(str, shape)) + ("^T" if t else "")  # noqa: E731
        bias = " + bias" if self.added else ""
        return f"{self.op[6:]} {show(self.a, self.a_transposed)} @ {show(self.b, self.b_transposed)}{bias} {self.dtype}"

    def flops(self) -> int:
        *batch, m, k = self.a
        return 2 * m * k * self.b[-1] * (batch[0] if batch else 1)


class OpTimer(TorchDispatchMode):
    """Per aten op (name without overload): total wall seconds, calls and FLOPs (where torch counts them);
    per matmul shape (`MatmulShape`): seconds and calls."""

    def __init__(self):
        super().__init__()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.flops: dict[str, int] = defaultdict(int)
        self.matmul_seconds: dict[MatmulShape, float] = defaultdict(float)
        self.matmul_calls: dict[MatmulShape, int] = defaultdict(int)

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
        if name in MATMUL_OPS and all(isinstance(t, torch.Tensor) for t in args[:3]):
            shape = MatmulShape.of(name, args)
            self.matmul_seconds[shape] += elapsed
            self.matmul_calls[shape] += 1
        return out

    def start(self) -> None:
        self.__enter__()

    def stop(self) -> None:
        self.__exit__(None, None, None)

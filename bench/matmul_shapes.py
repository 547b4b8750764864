"""A training step's matmul shapes timed alone, with their operands in cache and evicted from it.

bench.profile_step's per-op clock (bench.op_timer) records each matmul's shapes and layout inside the step;
here the same call is repeated on its own: warm (the operands stay in cache between calls) and cold (a
buffer larger than the last-level cache is written before each call). A matmul that runs near its cold
rate inside the step waits on memory, not on the matrix units.
"""

import time

import torch

from bench.op_timer import MatmulShape

EVICT_BYTES = 256 << 20  # larger than any last-level cache these benchmarks run on


def operands(shape: MatmulShape) -> tuple[torch.Tensor, ...]:
    """Seeded tensors in the recorded layout (a transposed operand is a transposed view, as in the step)."""
    gen = torch.Generator().manual_seed(0)
    dtype = getattr(torch, shape.dtype)

    def make(dims: tuple[int, ...], transposed: bool) -> torch.Tensor:
        if not transposed:
            return torch.randn(dims, generator=gen).to(dtype)
        *batch, rows, cols = dims
        return torch.randn((*batch, cols, rows), generator=gen).to(dtype).transpose(-1, -2)

    a, b = make(shape.a, shape.a_transposed), make(shape.b, shape.b_transposed)
    if not shape.added:
        return a, b
    return torch.randn(shape.b[-1], generator=gen).to(dtype), a, b


def time_alone(shape: MatmulShape, reps: int = 10, evict_bytes: int = EVICT_BYTES) -> dict[str, float]:
    """FLOP/s of the call alone: the median of `reps` calls, warm and cold."""
    op = getattr(torch.ops.aten, shape.op.removeprefix("aten::"))
    args = operands(shape)
    evict = torch.empty(evict_bytes, dtype=torch.uint8)
    rates = {}
    for state in ("warm", "cold"):
        op(*args)  # kernel selection, first touch
        seconds = []
        for _ in range(reps):
            if state == "cold":
                evict.fill_(len(seconds))
            start = time.perf_counter()
            op(*args)
            seconds.append(time.perf_counter() - start)
        rates[state] = shape.flops() / sorted(seconds)[reps // 2]
    return rates

"""Learning-rate schedules, sized from the trainer's total number of optimizer steps.

Warm-up follows open_clip's rule: step s < W runs at (s + 1) / W of the base rate, so the first step
already learns (a schedule starting at 0 spends its first step moving nothing while Adam's moments see it).
"""

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_step_count(warmup: float | int, total_steps: int) -> int:
    """`warmup` as a step count: a float below 1 is a fraction of the run, anything else a count."""
    return int(warmup * total_steps) if isinstance(warmup, float) and warmup < 1 else int(warmup)


def _after_warmup(warmup_steps: int, decay: Callable[[int], float]) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return decay(step - warmup_steps)

    return factor


def cosine_with_warmup(optimizer: Optimizer, total_steps: int, warmup: float | int = 0.05) -> LambdaLR:
    """Linear warm-up then cosine decay to zero at `total_steps`."""
    warmup_steps = warmup_step_count(warmup, total_steps)
    span = max(total_steps - warmup_steps, 1)
    cosine = lambda e: 0.5 * (1 + math.cos(math.pi * min(e / span, 1.0)))  # noqa: E731
    return LambdaLR(optimizer, _after_warmup(warmup_steps, cosine))


def constant_with_warmup(optimizer: Optimizer, total_steps: int, warmup: float | int = 0.0) -> LambdaLR:
    return LambdaLR(optimizer, _after_warmup(warmup_step_count(warmup, total_steps), lambda e: 1.0))

"""Learning-rate schedules, sized from the trainer's total number of optimizer steps."""

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_cosine_schedule_with_warmup


def cosine_with_warmup(optimizer: Optimizer, total_steps: int, warmup: float | int = 0.05) -> LambdaLR:
    """Linear warm-up then cosine decay to zero; `warmup` is a step count or a fraction of the run."""
    warmup_steps = int(warmup * total_steps) if isinstance(warmup, float) and warmup < 1 else int(warmup)
    return get_cosine_schedule_with_warmup(optimizer, warmup_steps, max(total_steps, warmup_steps + 1))


def constant_with_warmup(optimizer: Optimizer, total_steps: int, warmup: float | int = 0.0) -> LambdaLR:
    warmup_steps = int(warmup * total_steps) if isinstance(warmup, float) and warmup < 1 else int(warmup)
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0)

"""The learning-rate schedules give open_clip_train's rates step for step (its scheduler is the oracle)."""

import pytest
import torch
from open_clip_train.scheduler import const_lr, cosine_lr

from cliplab.lit.schedules import constant_with_warmup, cosine_with_warmup, warmup_step_count

BASE_LR = 5e-4


def _rates(make, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    scheduler = make(optimizer)
    rates = []
    for _ in range(steps):  # the rate each optimizer step uses, as Lightning steps the scheduler after it
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def _open_clip_rates(make, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    adjust = make(optimizer)
    return [adjust(step) for step in range(steps)]


@pytest.mark.parametrize("steps,warmup", [(300, 0.05), (41, 0.1), (100, 7), (50, 0)])
def test_cosine_matches_open_clip(steps, warmup):
    ours = _rates(lambda opt: cosine_with_warmup(opt, steps, warmup), steps)
    w = warmup_step_count(warmup, steps)
    theirs = _open_clip_rates(lambda opt: cosine_lr(opt, BASE_LR, w, steps), steps)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-15)
    assert ours[0] > 0  # the first step learns
    if w:
        assert ours[w - 1] == pytest.approx(BASE_LR)


def test_constant_matches_open_clip():
    ours = _rates(lambda opt: constant_with_warmup(opt, 100, 10), 100)
    theirs = _open_clip_rates(lambda opt: const_lr(opt, BASE_LR, 10, 100), 100)
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_warmup_fraction_or_count():
    assert warmup_step_count(0.05, 300) == 15
    assert warmup_step_count(15, 300) == 15
    assert warmup_step_count(1.0, 300) == 1  # 1.0 reads as a count, not the whole run

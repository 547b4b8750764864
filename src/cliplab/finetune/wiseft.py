"""WiSE-FT: the weights `(1 - alpha) * zero-shot + alpha * fine-tuned`, parameter by parameter.

`torch.lerp` returns its start exactly at alpha = 0 and its end exactly at alpha = 1, so the two ends of
the grid are the zero-shot and the fine-tuned model bit for bit.
"""

from collections.abc import Mapping

import torch


def interpolate(
    zero_shot: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """The interpolated state dict; integer buffers (counters) are taken from the nearer end."""
    if zero_shot.keys() != finetuned.keys():
        missing = sorted(zero_shot.keys() ^ finetuned.keys())
        raise ValueError(f"the two models have different parameters, e.g. {missing[:3]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    mixed = {}
    for key, start in zero_shot.items():
        end = finetuned[key]
        if start.is_floating_point():
            mixed[key] = torch.lerp(start, end.to(start.dtype), alpha)
        else:
            mixed[key] = (end if alpha >= 0.5 else start).clone()
    return mixed

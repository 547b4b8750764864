"""Dtype helpers shared by the models and the losses."""

import torch


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors up to fp32; fp32 and fp64 unchanged (tests compare in fp64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()

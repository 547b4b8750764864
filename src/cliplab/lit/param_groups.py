"""Optimizer parameter groups with decoupled weight decay.

Gains, biases, the temperature and anything a tower lists in `no_weight_decay()` are not decayed
(decaying a LayerNorm gain or the logit scale towards zero is never what a CLIP run wants).
"""

from torch import nn


def no_decay_names(model: nn.Module) -> set[str]:
    """Fully qualified names of parameters exempt from weight decay beyond the `ndim < 2` rule."""
    names = set()
    for prefix, module in model.named_modules():
        if module is model or not hasattr(module, "no_weight_decay"):
            continue
        for name in module.no_weight_decay():
            names.add(f"{prefix}.{name}" if prefix else name)
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups, decay and no decay, over the trainable parameters of `model`."""
    exempt = no_decay_names(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or name in exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]

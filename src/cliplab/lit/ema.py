"""An exponential moving average of a model's weights (`conf/ema/`), part of the module's state dict.

The average is a submodule of the LightningModule holding one frozen parameter per live one, under the same
names (`ema.weights.<model key>`), so every strategy's checkpoint format saves and restores it exactly as it
does the model: one file (DDP), or sharded folders (FSDP2: the copies are cloned from the sharded live
parameters, so they are DTensors sharded the same way, and each rank averages only its own shard).
Frozen parameters are in no optimizer (param groups take trainable ones only) and, unlike buffers, are not
broadcast by DDP every step. The update is torch's own `get_ema_multi_avg_fn` (one `_foreach_lerp_` per
kind of tensor); the step count that drives the warmup is the `num_updates` buffer.
"""

import contextlib
from collections import defaultdict
from collections.abc import Iterator

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


def ema_enabled(ema: dict | None) -> bool:
    """Whether an `ema` config asks for an average (`ema=none` is empty)."""
    return bool(ema) and ema.get("decay") is not None


def _reshard(model: nn.Module) -> None:
    """FSDP2 modules back to their sharded parameters (a root kept unsharded after a forward would otherwise
    expose gathered plain tensors instead of the sharded DTensors the average mirrors)."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def _mirror(root: nn.Module, name: str, value: torch.Tensor) -> None:
    """Registers `value` as a frozen parameter at the dotted path `name` below `root`, making containers."""
    *path, leaf = name.split(".")
    for part in path:
        if part not in root._modules:
            root.add_module(part, nn.Module())
        root = root._modules[part]
    root.register_parameter(leaf, nn.Parameter(value, requires_grad=False))


def _by_kind(*lists: list[torch.Tensor]) -> list[tuple[list[torch.Tensor], ...]]:
    """The lists split so each part is one kind of tensor (DTensor shards and plain replicated scalars
    cannot share a foreach call)."""
    groups = defaultdict(lambda: tuple([] for _ in lists))
    for items in zip(*lists, strict=True):
        group = groups[(type(items[0]), items[0].dtype, items[0].device)]
        for bucket, item in zip(group, items, strict=True):
            bucket.append(item)
    return list(groups.values())


class EmaWeights(nn.Module):
    """`W_ema <- decay_t * W_ema + (1 - decay_t) * W` after every optimizer step.

    The first update copies the live weights (so a run that starts from `pretrained=` weights averages from
    those, not from the random initialisation the copies were made of). With `warmup`, `decay_t =
    min(decay, (1 + t) / (10 + t))` for the t-th update, so the average follows fast-moving early weights.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        super().__init__()
        if not 0.0 <= float(decay) <= 1.0:
            raise ValueError(f"ema.decay={decay} must lie in [0, 1]")
        self.decay, self.warmup = float(decay), bool(warmup)
        self.names = [name for name, param in model.named_parameters() if param.is_floating_point()]
        live = dict(model.named_parameters())
        self.weights = nn.Module()
        for name in self.names:
            _mirror(self.weights, name, live[name].detach().clone())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self._count: int | None = None  # num_updates on the host, read once per fit (`forget_count`)

    def forget_count(self) -> None:
        """After a checkpoint restore: read `num_updates` again at the next update."""
        self._count = None

    def decay_at(self, updates_done: int) -> float:
        if updates_done == 0:
            return 0.0
        if self.warmup:
            return min(self.decay, (1 + updates_done) / (10 + updates_done))
        return self.decay

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        _reshard(model)
        live, averaged = dict(model.named_parameters()), dict(self.weights.named_parameters())
        return [live[name] for name in self.names], [averaged[name] for name in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self._count is None:
            self._count = int(self.num_updates)
        live, averaged = self._pairs(model)
        update = get_ema_multi_avg_fn(self.decay_at(self._count))
        for averaged_part, live_part in _by_kind(averaged, live):
            update(averaged_part, [p.detach() for p in live_part], None)
        self._count += 1
        self.num_updates.fill_(self._count)

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Within: `model` holds the averaged weights (evaluate it as usual); its own are put back after."""
        live, averaged = self._pairs(model)
        with torch.no_grad():
            saved = [p.detach().clone() for p in live]
            _copy(live, averaged)
        try:
            yield
        finally:
            with torch.no_grad():
                _copy(self._pairs(model)[0], saved)


def _copy(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    for target, source in zip(targets, sources, strict=True):
        target.copy_(source)

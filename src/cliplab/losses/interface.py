"""The contract of a loss, in code (docs/contracts.md, "Losses").

A loss class names it (`class ClipLoss(LossModule)`, or `(nn.Module, Loss)` with its own `forward`) and
sets the two class attributes that `cliplab.validate` reads instead of a list of names.
`tests/test_contracts.py` builds every `conf/loss/*.yaml` and checks it against this.
"""

from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Loss(Protocol):
    """`loss(image_features, text_features, logit_scale, logit_bias=None) -> scalar` tensor.

    Features are this rank's `[B, E]`, L2-normalised; `logit_scale` is already exponentiated. A loss
    gathers over ranks itself when `torch.distributed` runs with more than one process, and returns this
    rank's share: its mean over ranks is the loss of the global batch.
    """

    # Its value couples the samples of a batch: plain `trainer.accumulate_grad_batches > 1` is rejected
    # (each micro-batch would see only its own negatives); `accumulation=feature_cache` is exact.
    contrastive: ClassVar[bool]
    # It needs the model's learned `logit_bias` (`model.init_logit_bias`, e.g. SigLIP).
    needs_logit_bias: ClassVar[bool]

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class LossModule(nn.Module, Loss):
    """The base of cliplab's own losses: the `Loss` call, typed once here, hands its arguments to `score`,
    which each loss writes with the same four arguments (its math only)."""

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.score(image_features, text_features, logit_scale, logit_bias)

    def score(self, image_features, text_features, logit_scale, logit_bias) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define score()")

"""The contracts of an image tower, a text tower and a tokenizer, in code (docs/contracts.md, "Towers").

Implementations name the protocol they fulfil (`class CLIPTextTower(nn.Module, TextTower)`), so a reader
finds every tower from here and a type checker holds them to it; `tests/test_contracts.py` builds every
YAML of `conf/model/image_tower/`, `conf/model/text_tower/` and `conf/model/tokenizer/` and checks it
against these. The protocols are runtime-checkable: `isinstance(obj, ImageTower)` checks the members are
there (not their signatures; the contract test checks behaviour).
"""

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Tower(Protocol):
    """What the CLIP model, the optimizer's parameter groups, FSDP wrapping and activation checkpointing
    need from either tower."""

    output_dim: int  # width of `forward`'s output; the CLIP model checks it equals its embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, ...] -> [B, output_dim]`, not normalised."""
        ...

    def lock(self, unlocked_groups: int = 0, freeze_norm_stats: bool = False) -> None:
        """Freeze all but the last `unlocked_groups` parameter groups (LiT); `freeze_norm_stats` also stops
        the frozen part's batch-norm statistics."""
        ...

    def set_grad_checkpointing(self, enable: bool = True) -> None: ...

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to the tower) exempt from weight decay beyond the "ndim < 2" rule."""
        ...

    def block_classes(self) -> tuple[type[nn.Module], ...]:
        """The repeated blocks: what FSDP wraps one by one and activation checkpointing reruns."""
        ...


@runtime_checkable
class ImageTower(Tower, Protocol):
    """`forward(images float [B, 3, H, W], normalised) -> [B, output_dim]`."""

    def param_groups(self) -> list[list[str]]:
        """Parameter names from input to output in the groups `lock` counts; the head in the last one."""
        ...


@runtime_checkable
class TextTower(Tower, Protocol):
    """`forward(tokens long [B, L]) -> [B, output_dim]` for any L up to the tokenizer's context length
    (batches are trimmed to their longest caption)."""


@runtime_checkable
class Tokenizer(Protocol):
    """`tokenizer(texts) -> LongTensor[N, context_length]`: built once per run from `model.tokenizer`,
    called by the data module's collate (in the loader workers, so it must pickle) and by zero-shot
    evaluation."""

    context_length: int
    vocab_size: int
    pad_token_id: int  # trailing padding, trimmed by `cliplab.data.samples.trim_padding`
    eot_token_id: int | None  # the token a causal tower pools at; None when the tower pools by mask

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor: ...

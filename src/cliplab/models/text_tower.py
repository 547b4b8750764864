"""OpenAI CLIP's text tower: a causal pre-LN transformer pooled at the end-of-text token.

State-dict keys match open_clip's `text.*` layout (CustomTextCLIP) with the `text.` prefix removed, so
OpenAI and open_clip checkpoints load directly. A checkpoint trained with another context length loads
too: its positional embedding is linearly interpolated (`resize_text_pos_embed`).
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn

from cliplab.models.interfaces import TextTower
from cliplab.models.layers import LayerNorm, ResidualAttentionBlock, Transformer
from cliplab.models.locking import lock_tower, text_groups

log = logging.getLogger(__name__)


def resize_text_pos_embed(pos_embed: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly interpolate a `[L_old, W]` positional embedding to `[length, W]`."""
    if pos_embed.shape[0] == length:
        return pos_embed
    resized = F.interpolate(pos_embed.T.unsqueeze(0).float(), size=length, mode="linear", align_corners=False)
    return resized[0].T.to(pos_embed.dtype).contiguous()


class CLIPTextTower(nn.Module, TextTower):
    """`forward(tokens [B, L]) -> [B, embed_dim]` (not normalised), with L <= context_length."""

    # Causal attention pooled at end-of-text: padding after the longest EOT can be trimmed exactly.
    causal = True

    def __init__(
        self,
        embed_dim: int,
        context_length: int = 77,
        vocab_size: int = 49408,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        act: str = "quick_gelu",
        eot_token_id: int | None = None,
        grad_checkpointing: bool = False,
        selective_recompute: bool = False,
        checkpoint_chunks: int = 1,
    ):
        super().__init__()
        self.output_dim = embed_dim
        self.context_length = context_length
        self.vocab_size = vocab_size
        # None pools at argmax(token id), which is EOT in OpenAI's vocabulary (its largest id).
        self.eot_token_id = eot_token_id
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, mlp_ratio, act)
        self.ln_final = LayerNorm(width)
        # A bare matrix used as `x @ text_projection` (OpenAI's layout), not an nn.Linear.
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.init_parameters()
        self.set_grad_checkpointing(grad_checkpointing)
        # Off by default: less activation memory, but per-op dispatch overhead (slower steps, see recompute.py).
        self.transformer.selective_recompute = selective_recompute
        # With grad_checkpointing: blocks rerun over this many batch slices (cliplab.models.recompute).
        self.transformer.checkpoint_chunks = checkpoint_chunks

    def init_parameters(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer.init_openai_()
        nn.init.normal_(self.text_projection, std=self.transformer.width**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(f"got {length} tokens but context_length is {self.context_length}")
        x = self.token_embedding(tokens) + self.positional_embedding[:length].to(
            self.token_embedding.weight.dtype
        )
        x = self.ln_final(self.transformer(x, is_causal=True))
        if self.eot_token_id is None:
            eot_index = tokens.argmax(dim=-1)
        else:
            eot_index = (tokens == self.eot_token_id).int().argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot_index]
        return pooled @ self.text_projection

    # ---- tower contract (docs/contracts.md) ----

    def param_groups(self) -> list[list[str]]:
        """open_clip's text lock groups: embeddings, each block, the last block with the final LayerNorm,
        the projection (`cliplab.models.locking`)."""
        return text_groups(self)

    def lock(self, unlocked_groups: int = 0, freeze_norm_stats: bool = False) -> None:
        """Freeze all but the last `unlocked_groups` of `param_groups()`.

        `freeze_norm_stats` is accepted for the common contract; LayerNorm keeps no running statistics.
        """
        lock_tower(self, unlocked_groups)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {"positional_embedding"}

    def block_classes(self) -> tuple[type, ...]:
        return (ResidualAttentionBlock,)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "positional_embedding"
        loaded = state_dict.get(key)
        if loaded is not None and loaded.shape[0] != self.context_length:
            log.info("Resizing text positional embedding from %d to %d", loaded.shape[0], self.context_length)
            state_dict[key] = resize_text_pos_embed(loaded, self.context_length)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

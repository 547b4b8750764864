"""A random-weight open_clip model seen through cliplab's interface (tests and benchmarks only).

open_clip's built-in text encoder always runs at full context length; `CausalTextView` runs the very same
weights on whatever token width it is given (slicing the position table and the causal mask), and declares
`causal = True` so cliplab's classifier builder may trim padding. Comparing the two is the exactness test.
"""

import open_clip
import torch
import torch.nn.functional as F
from torch import nn


def tiny_open_clip(embed_dim=32, width=64, layers=2, heads=2, image_size=32, seed=0) -> open_clip.CLIP:
    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=embed_dim,
        vision_cfg=open_clip.CLIPVisionCfg(
            layers=layers, width=width, head_width=width // heads, patch_size=8, image_size=image_size
        ),
        text_cfg=open_clip.CLIPTextCfg(
            context_length=77, vocab_size=49408, width=width, heads=heads, layers=layers
        ),
    )
    return model.eval()


class CausalTextView(nn.Module):
    causal = True

    def __init__(self, oc: open_clip.CLIP):
        super().__init__()
        self.oc = oc
        self.output_dim = oc.text_projection.shape[1]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        oc, width = self.oc, tokens.shape[1]
        x = oc.token_embedding(tokens) + oc.positional_embedding[:width]
        x = oc.transformer(x, attn_mask=oc.attn_mask[:width, :width])
        x = oc.ln_final(x)
        x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]  # CLIP pools at end-of-text (highest id)
        return x @ oc.text_projection


class ClipLabView(nn.Module):
    """cliplab's CLIP interface (`visual`, `text`, `encode_image`, `encode_text`) over an open_clip model."""

    def __init__(self, oc: open_clip.CLIP):
        super().__init__()
        self.oc = oc
        self.text = CausalTextView(oc)

    def encode_image(self, images, normalize=False):
        return self.oc.encode_image(images, normalize=normalize)

    def encode_text(self, tokens, normalize=False):
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

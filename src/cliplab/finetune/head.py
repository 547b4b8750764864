"""An image classifier whose head starts as the zero-shot classifier (WiSE-FT's initialisation).

`logits = scale * normalize(image features) @ W.T + b` with `W` = the zero-shot class embeddings `[C, E]`,
`b` = 0 and `scale` the CLIP model's temperature (a fixed buffer): at initialisation the classifier ranks
classes exactly as zero-shot classification does, only the logits are scaled for the cross-entropy.
"""

import torch
import torch.nn.functional as F
from torch import nn


class ZeroShotHead(nn.Module):
    def __init__(self, classifier: torch.Tensor, scale: float):
        """`classifier`: the zero-shot weights `[E, C]` (`cliplab.eval.zeroshot.build_zeroshot_classifier`)."""
        super().__init__()
        self.weight = nn.Parameter(classifier.detach().float().T.clone())
        self.bias = nn.Parameter(torch.zeros(classifier.shape[1]))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(features.float(), dim=-1), self.weight) + self.bias


class ImageClassifier(nn.Module):
    """An image tower and a classification head: `forward(images [B, 3, H, W]) -> logits [B, C]`."""

    def __init__(self, visual: nn.Module, head: ZeroShotHead):
        super().__init__()
        self.visual, self.head = visual, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.visual(images))

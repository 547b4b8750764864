"""Tiny images, tables and models shared by the evals tests (built in tmp_path, a few seconds)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SIZE = 8


def class_folder(
    root: Path, classes: int, per_class: int, separable: bool, seed: int = 0, noise: float | None = None
) -> Path:
    """root/c<i>/<n>.png: a colour per class plus noise (separable) or pure noise (labels carry nothing)."""
    rng = np.random.default_rng(seed)
    colours = np.random.default_rng(0).integers(0, 256, (classes, 3))  # the same in every folder
    spread = noise or (20 if separable else 80)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            base = colours[c] if separable else np.full(3, 128)
            pixels = np.clip(base + rng.normal(0, spread, (IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255).astype(
                np.uint8
            )
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return root


def pairs_table(root: Path, n: int = 12, seed: int = 0) -> Path:
    """pairs.csv (image, caption) beside n random images; captions are distinct words."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = ["image,caption"]
    for i in range(n):
        pixels = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.png")
        lines.append(f"{i}.png,{i} {'abcdefghijklmnop'[i % 16]} picture")  # distinct in a short context
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv"


class PixelModel(torch.nn.Module):
    """Image feature = a fixed random projection of the pixels; text feature = a bag of character codes
    projected the same way. Deterministic, no training, informative enough for non-trivial metrics."""

    embed_dim = 6

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.image_proj = torch.nn.Parameter(torch.randn(3 * IMAGE_SIZE * IMAGE_SIZE, 6, generator=g))
        self.text_proj = torch.nn.Parameter(torch.randn(64, 6, generator=g))

    def encode_image(self, images, normalize=False):
        return images.flatten(1) @ self.image_proj

    def encode_text(self, tokens, normalize=False):
        counts = torch.zeros(tokens.shape[0], 64).scatter_add_(
            1, tokens % 64, torch.ones_like(tokens).float()
        )
        return counts @ self.text_proj


def char_tokenizer(captions: list[str]) -> torch.Tensor:
    out = torch.zeros(len(captions), 32, dtype=torch.long)
    for row, text in enumerate(captions):
        ids = [ord(ch) for ch in text[:32]]
        out[row, : len(ids)] = torch.tensor(ids)
    return out

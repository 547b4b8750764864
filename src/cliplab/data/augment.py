"""Augmentations that suit drawings and icons, applied to the train crop as a uint8 [1, 3, S, S] batch.

Each is a switch (0 = off). Off switches draw nothing from the generator, so a transform with all of them
off gives exactly the pixels (and the RNG stream) of the plain CLIP crop.

- `zoom_out`: shrink the drawing to a random side in [1 - zoom_out, 1] of the canvas and place it at a
  random position on white (icons sit anywhere, at any size, in real pictures);
- `color_jitter`: brightness, contrast and saturation factors drawn from [1 - s, 1 + s];
- `grayscale_p`: probability of a grey-scale image (the line-art and glyph styles have no colour);
- `invert_p`: probability of inverting the pixels (light drawings on dark backgrounds);
- `dark_background_p`: probability of turning the white background black while the drawing keeps its
  colours (objects photographed on black, as Fashion-MNIST's are). The background is the near-white
  region connected to the image border, so white inside a drawing (eyes, highlights) stays white. Dark
  line art (digits, glyphs, outlines) would vanish on black: it is inverted instead, light lines on black.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cliplab.utils.errors import ConfigError

# ITU-R BT.601 luma weights, as Pillow's convert("L") uses.
_LUMA = (0.299, 0.587, 0.114)
# Darkest grey level still counted as white background: the mix's JPEG shards ring a few levels around edges.
_WHITE = 230
# A drawing is dark line art (inverted, not put on black) when its pixels are grey (channel spread below
# _GREY on average) and dark (mean grey level below _DARK): black strokes with their grey edges, not fills.
_GREY = 32
_DARK = 128


def _uniform(low: float, high: float, generator) -> float:
    return torch.empty(1).uniform_(low, high, generator=generator).item()


def _chance(p: float, generator) -> bool:
    return torch.rand(1, generator=generator).item() < p


@dataclass(frozen=True)
class DrawingAugment:
    zoom_out: float = 0.0
    color_jitter: float = 0.0
    grayscale_p: float = 0.0
    invert_p: float = 0.0
    dark_background_p: float = 0.0

    def __post_init__(self):
        for name in self.switches():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"train_transform.{name}={value!r} must be a number in [0, 1] (0 = off)")
        if self.zoom_out >= 1.0:
            raise ConfigError(
                f"train_transform.zoom_out={self.zoom_out} must be below 1 (1 shrinks to nothing)"
            )

    @property
    def active(self) -> bool:
        return any(getattr(self, name) for name in self.switches())

    @classmethod
    def switches(cls) -> tuple[str, ...]:
        """The config keys of `data.train_transform` that this class owns."""
        return tuple(f.name for f in fields(cls))

    def __call__(self, pixels: torch.Tensor, generator=None) -> torch.Tensor:
        """uint8 [1, 3, S, S] -> uint8 [1, 3, S, S]."""
        if self.zoom_out:
            pixels = self._zoom_out(pixels, generator)
        if self.dark_background_p and _chance(self.dark_background_p, generator):
            pixels = _darken_background(pixels)
        if self.color_jitter or self.grayscale_p:
            x = pixels.float()
            if self.color_jitter:
                x = self._jitter(x, generator)
            if self.grayscale_p and _chance(self.grayscale_p, generator):
                x = _grey(x).expand_as(x).clone()
            pixels = x.round_().clamp_(0, 255).to(torch.uint8)
        if self.invert_p and _chance(self.invert_p, generator):
            pixels = 255 - pixels
        return pixels

    def _zoom_out(self, pixels: torch.Tensor, generator) -> torch.Tensor:
        size = pixels.shape[-1]
        side = max(1, round(size * _uniform(1.0 - self.zoom_out, 1.0, generator)))
        top = int(torch.randint(0, size - side + 1, (1,), generator=generator))
        left = int(torch.randint(0, size - side + 1, (1,), generator=generator))
        if side == size:
            return pixels
        small = F.interpolate(pixels, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
        canvas = torch.full_like(pixels, 255)
        canvas[:, :, top : top + side, left : left + side] = small
        return canvas

    def _jitter(self, x: torch.Tensor, generator) -> torch.Tensor:
        s = self.color_jitter
        brightness, contrast, saturation = (_uniform(1 - s, 1 + s, generator) for _ in range(3))
        x = x * brightness
        mean = _grey(x).mean()
        x = (x - mean) * contrast + mean
        grey = _grey(x)
        return (x - grey) * saturation + grey


def _darken_background(pixels: torch.Tensor) -> torch.Tensor:
    """Near-white pixels connected to the border (8-neighbourhood) become black; dark line art is inverted."""
    white = (pixels[0] >= _WHITE).all(dim=0).numpy()
    labels, _ = ndimage.label(white, structure=np.ones((3, 3), dtype=bool))
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    background = torch.from_numpy(np.isin(labels, edge[edge > 0]))
    drawing = pixels[0][:, ~background].float()  # [3, N]
    if drawing.numel():
        spread = (drawing.amax(dim=0) - drawing.amin(dim=0)).mean()
        if spread < _GREY and drawing.mean() < _DARK:
            return 255 - pixels
    out = pixels.clone()
    out[0][:, background] = 0
    return out


def _grey(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)

"""Augmentations that suit drawings and icons, applied to the train crop as a uint8 [1, 3, S, S] batch.

Each is a switch (0 = off). Off switches draw nothing from the generator, so a transform with all of them
off gives exactly the pixels (and the RNG stream) of the plain CLIP crop.

- `zoom_out`: shrink the drawing to a random side in [1 - zoom_out, 1] of the canvas and place it at a
  random position on white (icons sit anywhere, at any size, in real pictures);
- `color_jitter`: brightness, contrast and saturation factors drawn from [1 - s, 1 + s];
- `grayscale_p`: probability of a grey-scale image (the line-art and glyph styles have no colour);
- `invert_p`: probability of inverting the pixels (light drawings on dark backgrounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cliplab.utils.errors import ConfigError

# ITU-R BT.601 luma weights, as Pillow's convert("L") uses.
_LUMA = (0.299, 0.587, 0.114)


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

    def __post_init__(self):
        for name in ("zoom_out", "color_jitter", "grayscale_p", "invert_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"train_transform.{name}={value!r} must be a number in [0, 1] (0 = off)")
        if self.zoom_out >= 1.0:
            raise ConfigError(
                f"train_transform.zoom_out={self.zoom_out} must be below 1 (1 shrinks to nothing)"
            )

    @property
    def active(self) -> bool:
        return any((self.zoom_out, self.color_jitter, self.grayscale_p, self.invert_p))

    def __call__(self, pixels: torch.Tensor, generator=None) -> torch.Tensor:
        """uint8 [1, 3, S, S] -> uint8 [1, 3, S, S]."""
        if self.zoom_out:
            pixels = self._zoom_out(pixels, generator)
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


def _grey(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)

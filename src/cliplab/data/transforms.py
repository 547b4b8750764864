"""CLIP image transforms that stay uint8 until the batch is assembled.

`train_transform` / `eval_transform` return a `ClipImageTransform`. Called on a PIL image it gives the
usual normalised float tensor (same pixels as torchvision's RandomResizedCrop/Resize+CenterCrop followed by
ToTensor+Normalize). The data pipeline instead calls `decode(bytes)` -> uint8 HWC array per sample and
`normalize(batch)` once per batch: one vectorised float pass instead of two per image, and JPEGs are decoded
at a reduced DCT scale (`PIL.Image.draft`) when the target is much smaller than the stored image.
"""

import io
import warnings

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

# OpenAI CLIP's normalisation statistics (RGB, 0-1 scale).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Pillow's default bomb threshold is ~89 MP; images above this are refused before any pixel is decoded.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


class ImageTooLarge(ValueError):
    """The header announces more pixels than the configured limit (decompression-bomb guard)."""


def flatten_alpha(img: Image.Image) -> Image.Image:
    """RGB image; transparent pixels become white (a plain convert would expose arbitrary hidden colours,
    typically black, under the transparency of icons and emoji)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


class ClipImageTransform:
    """Random resized crop (train) or resize-shortest-side + center crop (eval), bicubic, no flip."""

    def __init__(
        self,
        image_size: int,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        train: bool = False,
        scale=(0.9, 1.0),
        ratio=(3 / 4, 4 / 3),
        draft: bool = True,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        if isinstance(image_size, (tuple, list)):
            if image_size[0] != image_size[1]:
                raise ValueError(f"only square image sizes are supported, got {tuple(image_size)}")
            image_size = image_size[0]
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.train = bool(train)
        self.scale = tuple(float(s) for s in scale)
        self.ratio = tuple(float(r) for r in ratio)
        self.draft = bool(draft)
        self.max_image_pixels = int(max_image_pixels)

    def __repr__(self) -> str:
        kind = f"train, scale={self.scale}" if self.train else "eval"
        return f"ClipImageTransform({self.image_size}, {kind}, draft={self.draft})"

    # ---- per-sample, uint8 -------------------------------------------------------------------------
    def decode(self, data: bytes) -> np.ndarray:
        """Encoded image bytes -> transformed uint8 array [H, W, 3]. Raises on corrupt or oversized input."""
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its own limit; our explicit check below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > self.max_image_pixels:
                raise ImageTooLarge(f"{width}x{height} exceeds max_image_pixels={self.max_image_pixels}")
            if self.draft and img.format == "JPEG":
                # DCT-domain downscale by 1/2, 1/4 or 1/8 while keeping the short side >= image_size.
                img.draft("RGB", (self.image_size, self.image_size))
            img.load()
        return self.apply_uint8(img)

    def apply_uint8(self, img: Image.Image) -> np.ndarray:
        """PIL image -> transformed uint8 array [H, W, 3]."""
        img = flatten_alpha(img)
        size = self.image_size
        if self.train:
            top, left, h, w = RandomResizedCrop.get_params(img, list(self.scale), list(self.ratio))
            img = img.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))
        else:
            img = self._resize_center_crop(img)
        return np.asarray(img)

    def _resize_center_crop(self, img: Image.Image) -> Image.Image:
        size = self.image_size
        width, height = img.size
        # Same rounding as torchvision.transforms.Resize(int) followed by CenterCrop(int).
        if width <= height:
            new_w, new_h = size, int(size * height / width)
        else:
            new_w, new_h = int(size * width / height), size
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), Image.BICUBIC)
        top = int(round((new_h - size) / 2.0))
        left = int(round((new_w - size) / 2.0))
        if (new_w, new_h) == (size, size):
            return img
        return img.crop((left, top, left + size, top + size))

    # ---- per-batch, float --------------------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] (or [H, W, 3]) -> normalised float [B, 3, H, W] (or [3, H, W])."""
        if images.dim() == 3:
            return self.normalize_chw(images.permute(2, 0, 1).unsqueeze(0).contiguous())[0]
        return self.normalize_chw(images.permute(0, 3, 1, 2).contiguous())

    def normalize_chw(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> normalised float [B, 3, H, W]: one conversion, one fused pass."""
        scale = torch.tensor(self.std).mul_(255.0).reciprocal_().view(1, 3, 1, 1)
        shift = -torch.tensor(self.mean).mul_(255.0).view(1, 3, 1, 1) * scale
        out = images.float()
        return torch.addcmul(shift, out, scale, out=out)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """PIL image -> normalised float tensor [3, H, W] (torchvision-style transform)."""
        return self.normalize(torch.from_numpy(np.array(self.apply_uint8(img))))


def train_transform(
    image_size, mean=CLIP_MEAN, std=CLIP_STD, scale=(0.9, 1.0), **kwargs
) -> ClipImageTransform:
    """CLIP training augmentation: random resized crop (area `scale`), bicubic, CLIP mean/std, no flip."""
    return ClipImageTransform(image_size, mean, std, train=True, scale=scale, **kwargs)


def eval_transform(image_size, mean=CLIP_MEAN, std=CLIP_STD, **kwargs) -> ClipImageTransform:
    """CLIP evaluation transform: resize the shortest side (bicubic), center crop."""
    return ClipImageTransform(image_size, mean, std, train=False, **kwargs)

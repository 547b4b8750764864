"""CLIP image transforms that stay uint8 until the batch is assembled.

`train_transform` / `eval_transform` return a `ClipImageTransform`. Called on a PIL image it gives the
usual normalised float tensor (same pixels as torchvision's RandomResizedCrop/Resize+CenterCrop followed by
ToTensor+Normalize). The data pipeline instead calls `decode(bytes)` -> uint8 HWC array per sample (JPEGs
decoded at a reduced DCT scale, `PIL.Image.draft`, when the crop is much larger than the target) and the
collate's `normalize_into` writes each one, normalised, straight into the float batch.

The train crop is resampled by torch's uint8 antialiased bicubic kernel (same filter as Pillow's BICUBIC,
a = -0.5 with the support widened by the scale factor, but about 3x faster); pixels differ from Pillow's by
rounding only (at most 2 grey levels, unbiased). Eval keeps Pillow, so it equals open_clip exactly.
"""

import io
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cliplab.data.augment import DrawingAugment

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
        augment: DrawingAugment | None = None,
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
        # Drawing augmentations (train only); every switch off draws nothing, so crops stay identical.
        self.augment = augment if augment is not None and augment.active else None
        # float32 like torchvision, so that a given seed draws the same crops as RandomResizedCrop.
        self._log_ratio = torch.log(torch.tensor(self.ratio)).tolist()

    def __repr__(self) -> str:
        kind = f"train, scale={self.scale}" if self.train else "eval"
        return f"ClipImageTransform({self.image_size}, {kind}, draft={self.draft})"

    # ---- per-sample, uint8 -------------------------------------------------------------------------
    def decode(self, data: bytes, generator: torch.Generator | None = None) -> np.ndarray:
        """Encoded image bytes -> transformed uint8 array [H, W, 3]. Raises on corrupt or oversized input.
        The random crop draws from `generator` (default: torch's global RNG)."""
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its own limit; our explicit check below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > self.max_image_pixels:
                raise ImageTooLarge(f"{width}x{height} exceeds max_image_pixels={self.max_image_pixels}")
            # The crop is drawn on the stored size (the header is enough), so that the DCT reduction can
            # be chosen from the region actually used: a small crop of a large image keeps its detail.
            crop = self.crop_params(height, width, generator) if self.train else (0, 0, height, width)
            reduce = self.draft_factor(crop[2], crop[3]) if self.draft and img.format == "JPEG" else 1
            if reduce > 1:
                img.draft("RGB", (width // reduce, height // reduce))  # Pillow then picks exactly `reduce`
            img.load()
        if not self.train:
            return self.apply_uint8(img)
        # Crop coordinates in pixels of the (possibly) reduced decode; rounding moves edges < 1 pixel.
        fy, fx = img.height / height, img.width / width
        top, left = round(crop[0] * fy), round(crop[1] * fx)
        bottom = min(img.height, max(top + 1, round((crop[0] + crop[2]) * fy)))
        right = min(img.width, max(left + 1, round((crop[1] + crop[3]) * fx)))
        return self.apply_uint8(img, (top, left, bottom - top, right - left), generator)

    def draft_factor(self, crop_height: int, crop_width: int) -> int:
        """Largest JPEG DCT reduction (1, 2, 4 or 8) that leaves the crop at least `image_size` on each side
        (so the final resize never upsamples because of it)."""
        fit = min(crop_height, crop_width) // self.image_size
        return next(f for f in (8, 4, 2, 1) if f <= max(fit, 1))

    def apply_uint8(self, img: Image.Image, crop=None, generator=None) -> np.ndarray:
        """PIL image -> transformed uint8 array [H, W, 3]; `crop` (top, left, h, w) or a random one."""
        img = flatten_alpha(img)
        if not self.train:
            return np.array(self._resize_center_crop(img))  # writable: the collate wraps it without a copy
        size = self.image_size
        # HWC pixels seen as a channels-last [1, 3, H, W] batch: the layout torch's fast uint8 kernel wants.
        pixels = torch.from_numpy(np.array(img)).permute(2, 0, 1).unsqueeze(0)
        top, left, h, w = crop if crop is not None else self.crop_params(img.height, img.width, generator)
        region = pixels[:, :, top : top + h, left : left + w]
        out = F.interpolate(region, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        if self.augment is not None:
            out = self.augment(out, generator)
        return out[0].permute(1, 2, 0).numpy()

    def crop_params(self, height: int, width: int, generator=None) -> tuple[int, int, int, int]:
        """(top, left, h, w): torchvision's RandomResizedCrop.get_params with the same torch RNG draws
        (so a seed gives the same crop), minus its per-call tensor set-up."""
        area = height * width
        lo, hi = self._log_ratio
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(*self.scale, generator=generator).item()
            aspect = torch.empty(1).uniform_(lo, hi, generator=generator).exp_().item()
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator))
                left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator))
                return top, left, h, w
        # No draw fitted: the central crop closest to the allowed ratios.
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

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

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each [3, 1, 1]: (pixel / 255 - mean) / std == pixel * scale + shift."""
        scale = torch.tensor(self.std).mul_(255.0).reciprocal_().view(3, 1, 1)
        return scale, -torch.tensor(self.mean).mul_(255.0).view(3, 1, 1) * scale

    def normalize_chw(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> normalised float [B, 3, H, W]: one conversion, one fused pass."""
        scale, shift = self.affine()
        out = images.float()
        return torch.addcmul(shift, out, scale, out=out)

    def normalize_into(self, out: torch.Tensor, image: np.ndarray, affine=None) -> None:
        """uint8 [H, W, 3] array -> normalised float written into `out` [3, H, W].

        The conversion copy also does the HWC -> CHW transpose, and the in-place affine pass runs while
        the 600 kB float image is still in cache: the batch is written once, with no uint8 batch copy.
        """
        scale, shift = affine if affine is not None else self.affine()
        if not image.flags.writeable:  # torch refuses to wrap read-only arrays without a warning
            image = image.copy()
        out.copy_(torch.from_numpy(image).permute(2, 0, 1))
        out.mul_(scale).add_(shift)  # two in-place passes beat one broadcast addcmul here

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """PIL image -> normalised float tensor [3, H, W] (torchvision-style transform)."""
        return self.normalize(torch.from_numpy(self.apply_uint8(img)))  # already a fresh array: no copy


def train_transform(
    image_size,
    mean=CLIP_MEAN,
    std=CLIP_STD,
    scale=(0.9, 1.0),
    zoom_out=0.0,
    color_jitter=0.0,
    grayscale_p=0.0,
    invert_p=0.0,
    dark_background_p=0.0,
    **kwargs,
) -> ClipImageTransform:
    """CLIP training augmentation: random resized crop (area `scale`), bicubic, CLIP mean/std, no flip;
    the drawing switches (`cliplab.data.augment.DrawingAugment`, all off by default) follow the crop."""
    augment = DrawingAugment(
        zoom_out=zoom_out,
        color_jitter=color_jitter,
        grayscale_p=grayscale_p,
        invert_p=invert_p,
        dark_background_p=dark_background_p,
    )
    return ClipImageTransform(image_size, mean, std, train=True, scale=scale, augment=augment, **kwargs)


def eval_transform(image_size, mean=CLIP_MEAN, std=CLIP_STD, **kwargs) -> ClipImageTransform:
    """CLIP evaluation transform: resize the shortest side (bicubic), center crop."""
    return ClipImageTransform(image_size, mean, std, train=False, **kwargs)

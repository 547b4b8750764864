"""Draw one mixed-data item as an RGB `size` px square on white (SVG, raster, font glyph or MNIST digit)."""

from __future__ import annotations

import io
from functools import lru_cache

import cairosvg
from PIL import Image, ImageDraw, ImageFont, ImageOps

from cliplab.data.transforms import flatten_alpha

from .readers import Item


def _fit(img: Image.Image, size: int) -> Image.Image:
    """Fit inside the square keeping the aspect ratio (flags are 4:3), centred on white."""
    img = flatten_alpha(img)
    if img.size != (size, size):
        scale = size / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


def _svg_keeping_aspect(svg: bytes, size: int) -> Image.Image:
    """Rendered with its longer side `size` (a 4:3 flag stays 4:3; both sides given would stretch it)."""
    png = cairosvg.svg2png(bytestring=svg, output_width=size)
    img = Image.open(io.BytesIO(png))
    if img.height > size:
        img = Image.open(io.BytesIO(cairosvg.svg2png(bytestring=svg, output_height=size)))
    return img.convert("RGBA")


@lru_cache(maxsize=4)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _glyph(font_path: str, text: str, size: int) -> Image.Image:
    big = size * 2  # drawn at twice the size, then reduced: smoother edges
    canvas = Image.new("L", (big, big), 255)
    font = _font(font_path, int(big * 0.8))
    ImageDraw.Draw(canvas).text((big / 2, big / 2), text, font=font, fill=0, anchor="mm")
    return canvas.resize((size, size), Image.BICUBIC).convert("RGB")


def draw(item: Item, size: int) -> Image.Image:
    if item.how == "svg":
        return _fit(_svg_keeping_aspect(item.payload, size), size)
    if item.how == "raster":
        with Image.open(io.BytesIO(item.payload)) as img:
            img.load()
            return _fit(img, size)
    if item.how == "glyph":
        font_path, text = item.payload
        return _glyph(font_path, text, size)
    if item.how == "gray":  # MNIST: white strokes on black, inverted to ink on paper like the drawings
        digit = Image.frombytes("L", (28, 28), bytes(item.payload))
        return ImageOps.invert(digit).resize((size, size), Image.BICUBIC).convert("RGB")
    raise ValueError(f"unknown drawing kind {item.how!r}")

"""Rasterise emoji SVGs to RGB PNGs on white with CairoSVG, in a small process pool."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cairosvg
from PIL import Image

SVG_NS = "http://www.w3.org/2000/svg"
# OpenMoji layers its drawings as <g id="color">, "hair", "skin", ... under one <g id="line"> outline;
# its black line-art set is exactly that outline layer, so dropping the others yields it.
_FILL_LAYER = re.compile(r"^(color|hair|skin)", re.IGNORECASE)


def openmoji_line_art(svg: bytes) -> bytes | None:
    """The black outline layer of an OpenMoji SVG, or None when nothing but colour is left."""
    ET.register_namespace("", SVG_NS)
    root = ET.fromstring(svg)

    def strip(parent: ET.Element) -> None:
        for child in list(parent):
            if _FILL_LAYER.match(child.get("id", "")):
                parent.remove(child)
            else:
                strip(child)

    strip(root)
    if not any(el.get("id", "").startswith("line") for el in root.iter()):
        return None
    return ET.tostring(root)


def render_svg(svg: bytes, size: int) -> Image.Image:
    """An RGB `size` x `size` image of the SVG, transparent parts filled with white."""
    png = cairosvg.svg2png(bytestring=svg, output_width=size, output_height=size)
    rgba = Image.open(io.BytesIO(png)).convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def _render_one(job: tuple[bytes, int, str, bool]) -> str | None:
    svg, size, out, line_art = job
    try:
        if line_art:
            svg = openmoji_line_art(svg)
            if svg is None:
                return f"{out}: no line layer"
        image = render_svg(svg, size)
    except Exception as err:  # a malformed SVG drops one image, never the build
        return f"{out}: {type(err).__name__}: {err}"
    # PNG metadata would carry no timestamp anyway; optimize=False keeps writes fast and repeatable
    image.save(out, format="PNG")
    return None


def render_all(
    jobs: list[tuple[bytes, Path, bool]], size: int, workers: int = 2, progress=print
) -> dict[Path, str]:
    """Render every (svg, out_path, as_line_art); returns {out_path: error} for those that failed."""
    for _, out, _ in jobs:
        out.parent.mkdir(parents=True, exist_ok=True)
    payload = [(svg, size, str(out), line_art) for svg, out, line_art in jobs]
    failures: dict[Path, str] = {}
    step = max(1, len(payload) // 10)
    if workers <= 1 or len(payload) < 64:
        results = map(_render_one, payload)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_render_one, payload, chunksize=32)
    try:
        for i, (err, (_, out, _)) in enumerate(zip(results, jobs), start=1):
            if err is not None:
                failures[out] = err
            if i % step == 0 or i == len(payload):
                progress(f"  rendered {i}/{len(payload)}")
    finally:
        if pool is not None:
            pool.shutdown()
    return failures

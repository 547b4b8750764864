"""Official names, keywords and caption variants for emoji concepts.

The official name is the CLDR short name as the `emoji` package spells it ("umbrella with rain
drops", "flag: France"); `unicodedata` is the fallback. Keywords are the other names people gave
the emoji (the `emoji` package's aliases, emoji-data's short names) plus the words of its subgroup
("sky & weather" -> "sky", "weather"), never repeating the name itself.
"""

from __future__ import annotations

import random
import re
import unicodedata

import emoji

# Caption shapes used for training. The zero-shot prompt templates (TEMPLATES) are among them, so
# prompts look like captions the model has seen.
CAPTION_SHAPES = (
    "{name}",
    "an emoji of {name}.",
    "{name}: {keywords}",
    "an emoji of {name}: {keywords}",
    "{name}, {group}",
    "an emoji of {name} ({subgroup})",
    "{keywords}; {name}",
)
TEMPLATES = ("{}", "an emoji of {}.")


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("_", " ")).strip()


def official_name(char: str, group: str, subgroup: str) -> str:
    data = emoji.EMOJI_DATA.get(char) or emoji.EMOJI_DATA.get(char + "\ufe0f")
    if data is not None:
        name = _clean(data["en"].strip(":"))
    else:
        try:
            name = unicodedata.name(char).lower()
        except (ValueError, TypeError):
            name = ""
    if subgroup in ("country-flag", "subdivision-flag") and not name.lower().startswith("flag"):
        name = f"flag: {name}"  # CLDR's own spelling of flag names; `emoji` drops the prefix
    return name


def keywords(char: str, name: str, short_names: tuple[str, ...], subgroup: str) -> list[str]:
    found: list[str] = []
    data = emoji.EMOJI_DATA.get(char) or emoji.EMOJI_DATA.get(char + "\ufe0f") or {}
    for raw in (*data.get("alias", ()), *short_names):
        found.append(_clean(raw.strip(":")).replace("flag for ", "flag: "))
    found += [w for w in re.split(r"[-&]", subgroup) if w.strip() not in ("", "other")]
    out, seen = [], set()
    squashed_name = _squash(name)
    for word in found:
        word = _clean(word)
        # a keyword must add something: not a piece of the name, not a code like "flag-ng"
        if len(word) < 3 or re.fullmatch(r"flag-\w\w", word) or _squash(word) in squashed_name:
            continue
        if word.lower() not in seen:
            seen.add(word.lower())
            out.append(word)
    return out


def _squash(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def caption(name: str, words: list[str], group: str, subgroup: str, rng: random.Random) -> str:
    """One caption for one image, its shape and keywords drawn from `rng` (seeded per image)."""
    shape = rng.choice(CAPTION_SHAPES)
    if "{keywords}" in shape and not words:
        shape = "an emoji of {name}."
    picked = rng.sample(words, k=min(len(words), rng.randint(1, 3))) if words else []
    return shape.format(
        name=name,
        keywords=", ".join(picked),
        group=group.lower(),
        subgroup=subgroup.replace("-", " ").lower(),
    )

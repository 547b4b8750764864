"""Where cliplab keeps downloaded sources and built data sets (never inside git)."""

import os
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"  # the repository's Hydra config groups


def cache_dir() -> Path:
    """The cache root: `$CLIPLAB_CACHE`, else `~/.cache/cliplab`."""
    root = os.environ.get("CLIPLAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "cliplab")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path

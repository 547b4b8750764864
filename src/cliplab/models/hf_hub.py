"""Hugging Face names that need the hub, and the one line to say when it cannot be reached.

The presets (`conf/model/text_tower/bert_base.yaml`, ...) name hub models (`bert-base-uncased`). Offline
(`HF_HUB_OFFLINE=1`, or no network) such a name works only if it is already in the Hugging Face cache;
otherwise the user must pass a local folder, and the message says which key and how to make the folder.
"""

import os
from pathlib import Path

from cliplab.utils.errors import ConfigError

_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """`HF_HUB_OFFLINE` (or transformers' older `TRANSFORMERS_OFFLINE`) is set, read now, not at import."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def needs_hub(name_or_path, filename: str = "config.json") -> bool:
    """A name that is neither a local folder nor already in the Hugging Face cache."""
    if name_or_path is None or Path(str(name_or_path)).expanduser().is_dir():
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return not isinstance(try_to_load_from_cache(str(name_or_path), filename), str)
    except ValueError:  # not even a valid repo id: only a local path could have been meant
        return True


def offline_error(key: str, name: str) -> ConfigError:
    local = f"/data/{str(name).rstrip('/').split('/')[-1]}"
    return ConfigError(
        f"{key}={name} is a Hugging Face Hub name, not a local folder, and could not be fetched "
        f"(HF_HUB_OFFLINE=1, no network, or no such model): where the hub is reachable run "
        f"`hf download {name} --local-dir {local}`, then pass {key}={local}"
    )


def check_reachable(key: str, name, filename: str = "config.json") -> None:
    """Raise `offline_error` up front when offline and `name` would need the hub."""
    if hub_offline() and needs_hub(name, filename):
        raise offline_error(key, name)


def from_pretrained(load, key: str, name: str, filename: str = "config.json", **kwargs):
    """`load(name, **kwargs)` (a transformers `from_pretrained`), with the one-line message when the hub is
    needed and unreachable instead of transformers' traceback."""
    check_reachable(key, name, filename)
    try:
        return load(name, **kwargs)
    except OSError as err:
        if needs_hub(name, filename):
            raise offline_error(key, name) from err
        raise

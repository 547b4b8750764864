"""Build a cached data set once, however many processes ask for it at the same time."""

import fcntl
from collections.abc import Callable
from pathlib import Path


def build_once(
    root: Path, is_complete: Callable[[], bool], build: Callable[[], Path], force: bool, progress, what: str
) -> Path:
    """`root` when complete (unless `force`), else `build()` under `<root>.lock`.

    Builders of the same folder (two `make` targets, parallel tests) take turns; one that had to wait finds
    the build just finished and returns it, even with `force`.
    """
    if not force and is_complete():
        progress(f"{what} already built at {root}")
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(root.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            progress(f"another process is building {root}; waiting for it ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
            waited = True
        if (waited or not force) and is_complete():
            progress(f"{what} already built at {root}")
            return root
        return build()

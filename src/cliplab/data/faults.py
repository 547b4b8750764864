"""Skipped-data accounting that survives data-loader worker processes.

Every skipped sample or shard is appended as one JSON line to `<directory>/faults-<pid>.jsonl` by the
process that saw it (worker or main). Files are the side channel because they need no coordination:
nothing to drain, nothing that can block a worker at exit, and they work with fork or spawn. The main
process aggregates them on demand (`summary()`, `records()`).
"""

import json
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)

# Sample-level kinds.
CORRUPT_IMAGE = "corrupt_image"
IMAGE_TOO_LARGE = "image_too_large"
MISSING_IMAGE = "missing_image"
MISSING_CAPTION = "missing_caption"
EMPTY_CAPTION = "empty_caption"
# Shard-level kinds.
UNREADABLE_SHARD = "unreadable_shard"
TRUNCATED_SHARD = "truncated_shard"
SHARD_KINDS = (UNREADABLE_SHARD, TRUNCATED_SHARD)

# Log the first few faults of each process in full, then only every Nth (a bad shard can hold thousands).
_LOG_FIRST = 20
_LOG_EVERY = 1000


class FaultLog:
    """Picklable recorder of skipped data; each process appends to its own file in `directory`."""

    def __init__(self, directory: str | os.PathLike | None = None):
        if directory is None:
            directory = tempfile.mkdtemp(prefix="cliplab-data-faults-")
        self.directory = str(directory)
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        self._file = None
        self._pid = None
        self._count = 0

    def __getstate__(self) -> dict:
        return {"directory": self.directory}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"])

    def record(self, kind: str, shard: str | None, key: str | None, detail: str = "") -> None:
        """Note one skipped sample (or shard, with key None or the last key read)."""
        if self._pid != os.getpid():  # first use in this process (or a forked copy): own file
            self._pid = os.getpid()
            self._file = open(os.path.join(self.directory, f"faults-{self._pid}.jsonl"), "a")  # noqa: SIM115
            self._count = 0
        entry = {"kind": kind, "shard": shard, "key": key, "detail": str(detail)[:300]}
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        self._count += 1
        if self._count <= _LOG_FIRST or self._count % _LOG_EVERY == 0:
            log.warning("skipped %s: shard=%s key=%s %s", kind, shard, key, entry["detail"])

    def records(self) -> list[dict]:
        """All faults recorded so far by every process sharing this directory."""
        out = []
        for path in sorted(Path(self.directory).glob("faults-*.jsonl")):
            with open(path) as f:
                for line in f:
                    if line.endswith("\n"):  # a line being written right now is picked up next time
                        out.append(json.loads(line))
        return out

    def summary(self) -> dict[str, int]:
        """Counts by kind plus `skipped_samples` and `skipped_shards` totals (flat, ready to log)."""
        counts = Counter(r["kind"] for r in self.records())
        shards = sum(n for k, n in counts.items() if k in SHARD_KINDS)
        return {**dict(counts), "skipped_samples": sum(counts.values()) - shards, "skipped_shards": shards}

    def clear(self) -> None:
        for path in Path(self.directory).glob("faults-*.jsonl"):
            path.unlink()
        self._pid = None

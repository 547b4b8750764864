"""Skipped-data accounting that survives data-loader worker processes.

Every skipped sample or shard is appended as one JSON line to `<directory>/faults-<pid>.jsonl` by the
process that saw it (worker or main). Files are the side channel because they need no coordination:
nothing to drain, nothing that can block a worker at exit, and they work with fork or spawn. The main
process aggregates them on demand (`summary()`, `records()`).

Ranks of one run share the configured directory (`${paths.output_dir}/data_faults`); each rank owns the
subdirectory `rank<r>` (`FaultLog.for_rank`), so a rank's summary holds its own faults only and the sum over
ranks (`DataFaultLogger`) counts each fault once.
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
SAMPLE_KINDS = (CORRUPT_IMAGE, IMAGE_TOO_LARGE, MISSING_IMAGE, MISSING_CAPTION, EMPTY_CAPTION)
# Every key of `FaultLog.summary()`, always all of them (zero when none): the same keys on every rank.
SUMMARY_KEYS = (*SAMPLE_KINDS, *SHARD_KINDS, "skipped_samples", "skipped_shards")

# Log the first few faults of each process in full, then only every Nth (a bad shard can hold thousands).
_LOG_FIRST = 20
_LOG_EVERY = 1000


class FaultLog:
    """Picklable recorder of skipped data; each process appends to its own file in `directory`.

    `root` is the directory shared by every rank of a run; with a `rank`, this log reads and writes only
    `root/rank<rank>` (its `directory`).
    """

    def __init__(self, root: str | os.PathLike | None = None, rank: int | None = None):
        if root is None:
            root = tempfile.mkdtemp(prefix="cliplab-data-faults-")
        self.root, self.rank = str(root), rank
        self.directory = self.root if rank is None else os.path.join(self.root, f"rank{int(rank)}")
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        self._file = None
        self._pid = None
        self._count = 0

    def for_rank(self, rank: int) -> "FaultLog":
        """The log of `rank` under the same shared root (this log itself when it is already that rank's)."""
        return self if self.rank == rank else FaultLog(self.root, rank)

    def __getstate__(self) -> dict:
        return {"root": self.root, "rank": self.rank}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"], state["rank"])

    def record(self, kind: str, shard: str | None, key: str | None, detail: str = "") -> None:
        """Note one skipped sample (or shard, with key None or the last key read)."""
        if kind not in SAMPLE_KINDS and kind not in SHARD_KINDS:
            raise ValueError(f"unknown data fault kind {kind!r}: one of {SAMPLE_KINDS + SHARD_KINDS}")
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
        """All faults recorded so far by the processes (main and loader workers) writing to `directory`."""
        out = []
        for path in sorted(Path(self.directory).glob("faults-*.jsonl")):
            with open(path) as f:
                for line in f:
                    if line.endswith("\n"):  # a line being written right now is picked up next time
                        out.append(json.loads(line))
        return out

    def summary(self) -> dict[str, int]:
        """Counts of every kind plus `skipped_samples` and `skipped_shards` totals: the keys of
        `SUMMARY_KEYS`, zero when none (flat, ready to log)."""
        counts = Counter(r["kind"] for r in self.records())
        summary = {kind: counts.get(kind, 0) for kind in (*SAMPLE_KINDS, *SHARD_KINDS)}
        summary["skipped_samples"] = sum(counts.get(kind, 0) for kind in SAMPLE_KINDS)
        summary["skipped_shards"] = sum(counts.get(kind, 0) for kind in SHARD_KINDS)
        return summary

    def clear(self) -> None:
        for path in Path(self.directory).glob("faults-*.jsonl"):
            path.unlink()
        self._pid = None

"""Reads a sweep from its job directories (no network): config, final metrics, status, compute, curves."""

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from cliplab.sweeps.jobs import METRICS_FILE, STATUS_FILE

log = logging.getLogger(__name__)

SKIP_DIRS = {"checkpoints", "csv", "wandb", ".hydra", ".submitit", "report", "tensorboard"}


@dataclass
class Job:
    """One run directory of a sweep."""

    dir: Path
    name: str
    config: dict
    overrides: dict[str, str]
    metrics: dict = field(default_factory=dict)
    status: str = "unknown"
    error: str | None = None
    flops_per_sample: float | None = None

    @property
    def samples_seen(self) -> float | None:
        return self.metrics.get("train/samples_seen")

    @property
    def compute(self) -> float | None:
        """Training FLOPs: forward+backward FLOPs per sample x samples seen."""
        if self.flops_per_sample is None or self.samples_seen is None:
            return None
        return float(self.flops_per_sample) * float(self.samples_seen)

    def error_rate(self, metric: str) -> float | None:
        """1 - an accuracy metric (e.g. zeroshot/emoji/top1); a loss metric (`.../loss`) is returned as is."""
        value = self.metrics.get(metric)
        if value is None or not math.isfinite(float(value)):
            return None
        return float(value) if metric.endswith("loss") else 1.0 - float(value)

    def curve(self, key: str = "train/loss") -> list[tuple[int, float]]:
        """(step, value) rows of a logged metric from the job's CSV logs, in step order."""
        points = []
        for path in sorted(self.dir.glob("csv/**/metrics.csv")):
            with path.open() as f:
                for row in csv.DictReader(f):
                    if row.get(key) not in (None, "") and row.get("step") not in (None, ""):
                        points.append((int(float(row["step"])), float(row[key])))
        return sorted(points)


def _overrides(job_dir: Path, name: str) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.is_file() else name.split(",")
    return dict(item.lstrip("+~").split("=", 1) for item in items or [] if "=" in item)


@lru_cache(maxsize=256)
def _flops_cached(model_yaml: str) -> float | None:
    from cliplab.models.flops import train_flops_per_sample

    try:
        return float(train_flops_per_sample(yaml.safe_load(model_yaml)))
    except Exception as err:  # a tower the meta device cannot run: the job stays in the table, off the plot
        log.warning(
            "cannot count this model's FLOPs (%s: %s): its jobs are left off the compute axis",
            type(err).__name__,
            err,
        )
        return None


def flops_per_sample(config: dict) -> float | None:
    """Counted on the meta device from the saved model config (the same count the training module logs)."""
    model = config.get("model")
    return None if not model else _flops_cached(yaml.safe_dump(model, sort_keys=True))


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Every directory under `sweep_dir` holding a run's `config.yaml` (not inside a run's own folders)."""
    found = []
    for path in sorted(Path(sweep_dir).rglob("config.yaml")):
        job_dir = path.parent
        if job_dir.name == ".hydra" or SKIP_DIRS.intersection(job_dir.relative_to(sweep_dir).parts):
            continue
        found.append(job_dir)
    return found


def load_job(job_dir: Path, sweep_dir: Path | None = None) -> Job:
    job_dir = Path(job_dir)
    config = yaml.safe_load((job_dir / "config.yaml").read_text()) or {}
    name = str(job_dir.relative_to(sweep_dir)) if sweep_dir else job_dir.name
    job = Job(dir=job_dir, name=name, config=config, overrides=_overrides(job_dir, name))
    if (job_dir / METRICS_FILE).is_file():
        job.metrics = {
            k: v for k, v in json.loads((job_dir / METRICS_FILE).read_text()).items() if k != "results"
        }
        job.status = "completed"
    if (job_dir / STATUS_FILE).is_file():
        status = json.loads((job_dir / STATUS_FILE).read_text())
        job.status, job.error = status.get("status", job.status), status.get("error")
        if job.status == "running" and not job.metrics:
            job.status = "incomplete"  # started, never finished (killed, or still running)
    job.flops_per_sample = flops_per_sample(config)
    return job


def collect(sweep_dir: str | Path) -> list[Job]:
    """Every job of a sweep (finished or not), sorted by training compute then name."""
    sweep_dir = Path(sweep_dir)
    jobs = [load_job(d, sweep_dir) for d in find_job_dirs(sweep_dir)]
    return sorted(jobs, key=lambda j: (j.compute is None, j.compute or 0.0, j.name))

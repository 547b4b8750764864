"""One multirun job of a sweep: skip it when finished, resume it when interrupted, name its W&B run.

`pipeline.train` calls `start_job(cfg)` right after validating `cfg`, and trains with the config it returns
(the caller's `cfg` is never edited). Outside a multirun (or with `+sweep_resume=false`) the returned config
is the one given, so a plain `python src/train.py` never picks up an old run by accident.
"""

import copy
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, open_dict

from cliplab.checkpoints.find import newest_checkpoint

log = logging.getLogger("cliplab")

METRICS_FILE = "metrics.json"
STATUS_FILE = "status.json"


def _hydra_job() -> tuple[bool, str | None, str | None]:
    """(is a multirun job, sweep dir, override_dirname) from the live Hydra config, if any."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):  # no Hydra app running (e.g. train(cfg) from Python)
        return False, None, None
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return multirun, str(hydra_cfg.sweep.dir), str(hydra_cfg.job.override_dirname)


def is_finished(job_dir: Path) -> bool:
    return (Path(job_dir) / METRICS_FILE).is_file()


def read_metrics(job_dir: Path) -> dict:
    return json.loads((Path(job_dir) / METRICS_FILE).read_text())


def write_status(job_dir: Path, status: str, **extra) -> None:
    """`status.json`: running | completed | failed | skipped, with the error of a failed job."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / STATUS_FILE).write_text(json.dumps({"status": status, **extra}, indent=2, default=str))


def wandb_run_id(job_dir: Path) -> str:
    """A stable W&B run id per job directory, so a resumed job continues its own W&B run."""
    return hashlib.sha1(str(Path(job_dir).resolve()).encode()).hexdigest()[:16]


def _name_wandb_run(cfg: DictConfig, sweep_dir: str | None, job_name: str | None, job_dir: Path) -> None:
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not isinstance(wandb_cfg, DictConfig):
        return
    overrides = dict(item.split("=", 1) for item in (job_name or "").split(",") if "=" in item)
    with open_dict(wandb_cfg):
        if wandb_cfg.get("group") is None and sweep_dir:
            wandb_cfg.group = Path(sweep_dir).name  # every job of a sweep in one W&B group
        if wandb_cfg.get("name") is None and job_name:
            wandb_cfg.name = job_name
        wandb_cfg.id = wandb_cfg.get("id") or wandb_run_id(job_dir)
        wandb_cfg.resume = "allow"
        # The job's overrides as top-level W&B config keys: the sweep's axes, filterable in the UI.
        wandb_cfg.config = {"sweep": Path(sweep_dir).name if sweep_dir else None, **overrides}


@dataclass(frozen=True)
class JobStart:
    """What a sweep job starts from: the config to train with, or the metrics of a finished job."""

    cfg: DictConfig
    finished: dict | None = None  # saved metrics: the job is done, skip it


def start_job(cfg: DictConfig) -> JobStart:
    """The job's config: a copy of `cfg` with `ckpt_path` pointing at the job's newest complete checkpoint
    (a file, or an FSDP2 / DeepSpeed folder) when an earlier attempt left one, and its W&B run named;
    `pipeline.train` refuses that checkpoint if loading it could run code. A finished job returns its
    saved metrics instead."""
    multirun, sweep_dir, job_name = _hydra_job()
    enabled = cfg.get("sweep_resume")
    if not (multirun if enabled is None else enabled):
        return JobStart(cfg)
    job_dir = Path(cfg.paths.output_dir)
    if is_finished(job_dir):
        log.info("sweep job %s already finished (%s): skipped", job_name or job_dir, METRICS_FILE)
        return JobStart(cfg, finished=read_metrics(job_dir))
    job_cfg = copy.deepcopy(cfg)
    last = newest_checkpoint(job_dir / "checkpoints")
    if job_cfg.get("ckpt_path") is None and last is not None:
        log.info("sweep job %s resumes from %s", job_name or job_dir, last)
        job_cfg.ckpt_path = str(last)
    _name_wandb_run(job_cfg, sweep_dir, job_name, job_dir)
    write_status(job_dir, "running", overrides=job_name)
    return JobStart(job_cfg)


def is_multirun() -> bool:
    return _hydra_job()[0]

"""One multirun job of a sweep: skip it when finished, resume it when interrupted, name its W&B run.

`pipeline.train` calls `start_job(cfg)` first. Outside a multirun (or with `+sweep_resume=false`) it does
nothing, so a plain `python src/train.py` never picks up an old run by accident.
"""

import hashlib
import json
import logging
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


def start_job(cfg: DictConfig) -> dict | None:
    """Called at the start of `pipeline.train`. Returns the saved metrics of a finished job (skip it), else
    None after pointing `ckpt_path` at the job's newest complete checkpoint (a file, or an FSDP2 / DeepSpeed
    folder) when an earlier attempt left one; `pipeline.train` refuses it if it could run code."""
    multirun, sweep_dir, job_name = _hydra_job()
    enabled = cfg.get("sweep_resume")
    if not (multirun if enabled is None else enabled):
        return None
    job_dir = Path(cfg.paths.output_dir)
    if is_finished(job_dir):
        log.info("sweep job %s already finished (%s): skipped", job_name or job_dir, METRICS_FILE)
        return read_metrics(job_dir)
    last = newest_checkpoint(job_dir / "checkpoints")
    if cfg.get("ckpt_path") is None and last is not None:
        log.info("sweep job %s resumes from %s", job_name or job_dir, last)
        cfg.ckpt_path = str(last)
    _name_wandb_run(cfg, sweep_dir, job_name, job_dir)
    write_status(job_dir, "running", overrides=job_name)
    return None


def is_multirun() -> bool:
    return _hydra_job()[0]

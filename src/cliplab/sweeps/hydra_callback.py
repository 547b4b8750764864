"""Hydra callback for sweeps: records each job's outcome in its directory and summarises the sweep.

Enabled by the sweep experiments (`hydra.callbacks.sweep_jobs`). Hydra's basic launcher already keeps running
the remaining jobs after one raises; this makes the failure visible in `status.json` and in the report.
"""

import json
import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cliplab.sweeps.jobs import STATUS_FILE, write_status

log = logging.getLogger("cliplab")


class SweepJobRecorder(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        job_dir = Path(config.hydra.runtime.output_dir)
        name = config.hydra.job.override_dirname
        if job_return.status == JobStatus.FAILED:
            err = job_return._return_value  # the exception; .return_value would re-raise it
            trace = "".join(traceback.format_exception(err)) if isinstance(err, BaseException) else str(err)
            write_status(job_dir, "failed", overrides=name, error=repr(err), traceback=trace)
            log.error("sweep job %s failed: %r (the other jobs go on)", name, err)
        else:
            write_status(job_dir, "completed", overrides=name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = {}
        for path in sorted(sweep_dir.glob(f"*/{STATUS_FILE}")):
            statuses[path.parent.name] = json.loads(path.read_text()).get("status")
        (sweep_dir / "sweep_status.json").write_text(json.dumps(statuses, indent=2))
        failed = [name for name, status in statuses.items() if status == "failed"]
        log.info("sweep %s: %d jobs, %d failed %s", sweep_dir, len(statuses), len(failed), failed or "")

"""`torchrun --nproc_per_node 2 src/train.py cluster=torchrun trainer=ddp_cpu`: two CPU processes share
one run directory; rank 0 writes the config, the metrics and the checkpoints, each rank its own log."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "data=emoji",
    "cluster=torchrun",
    "trainer=ddp_cpu",
    "logger=csv",
    "debug=limit",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.max_epochs=1",
    "test=false",
    "evals=none",
    "callbacks.progress_bar=null",
]


def test_torchrun_two_processes_share_one_run_dir(tmp_path):
    from cliplab.data.prepare import prepare

    prepare()
    env = {**os.environ, "CLIPLAB_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(ROOT / "src" / "train.py"), *TINY],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1, f"every rank must use the same run directory, got {runs}"
    run = runs[0]
    assert run.name.startswith("torchrun_")
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert {p.name for p in run.glob("train_rank*.log")} == {"train_rank0.log", "train_rank1.log"}
    assert "train/loss" in json.loads((run / "metrics.json").read_text())

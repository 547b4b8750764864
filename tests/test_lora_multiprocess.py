"""LoRA composes with DDP and FSDP2 (2 CPU processes, gloo, `tests/_mp_lora_script.py` under torchrun):
base weights bit-identical on every rank, adapters trained, and the two strategies take the same steps."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("_mp_lora_script.py")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("mp_lora")
    # this checkout's package first (the editable install may point at another checkout)
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run([*cmd, str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "result.json").read_text())


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_only_adapters_move(result, strategy):
    run = result[strategy]
    assert run["base_unchanged"] and run["adapters_changed"]
    assert run["n_adapters"] > 0 and all(".lora_" in name for name in run["trainable"])
    assert run["losses"][-1] < run["losses"][0]


def test_fsdp_takes_the_same_steps_as_ddp(result):
    assert result["fsdp"]["losses"] == pytest.approx(
        result["ddp"]["losses"], rel=1e-4
    )  # reduce-scatter vs all-reduce: float32 sums in another order
    assert result["fsdp"]["trainable"] == result["ddp"]["trainable"]

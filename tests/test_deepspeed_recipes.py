"""LiT and distillation compose with DeepSpeed: Lightning's DeepSpeedStrategy on the CPU (ZeRO-2 and -3,
`tests/_deepspeed_recipes_script.py`) trains the same steps as a plain fit: a locked image tower stays
bit-identical while the text tower trains, and the distillation loss is the plain fit's, step for step."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("_deepspeed_recipes_script.py")
STAGES = ("stage2", "stage3")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ds_recipes") / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}  # fmt: skip
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "2", "3"], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("run", ["reference", *STAGES])
def test_locked_image_tower_stays_identical_while_the_text_tower_trains(runs, run):
    lit = runs[run]["lit"]
    assert lit["after"]["image"] == lit["before"]["image"]  # bit for bit: no gradient, no decay, no update
    assert lit["after"]["text"] != lit["before"]["text"]


@pytest.mark.parametrize("stage", STAGES)
def test_deepspeed_trains_the_plain_fits_losses(runs, stage):
    for recipe in ("lit", "distill"):
        assert runs[stage][recipe]["loss"] == pytest.approx(runs["reference"][recipe]["loss"], rel=1e-4)
    distill = runs[stage]["distill"]["distill"]
    assert len(distill) == 2 and all(value > 0 for value in distill)
    assert distill == pytest.approx(runs["reference"]["distill"]["distill"], rel=1e-4)

"""Two CPU processes (gloo): FSDP2 and DDP train a tiny CLIP identically, resume identically from a
checkpoint, and keep the temperature clamped at ln(100).

Both runs go through `tests/_mp_train_script.py` under torchrun (about 30 s each on two cores).
"""

import json
import math
from pathlib import Path

import pytest

from tests._torchrun import torchrun

SCRIPT = Path(__file__).with_name("_mp_train_script.py")
# DDP all-reduces gradients, FSDP2 reduce-scatters them: the sums run in another order, so allow
# float32 rounding (observed: bitwise equal on CPU).
RTOL = 1e-5


def _run(strategy: str, out: Path) -> dict:
    torchrun(SCRIPT, strategy, out)
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mp")
    return {name: _run(name, root / name) for name in ("ddp", "fsdp")}


def test_fsdp_matches_ddp_step_by_step(runs):
    ddp, fsdp = runs["ddp"]["straight"], runs["fsdp"]["straight"]
    assert len(ddp["losses"]) == 6
    assert fsdp["losses"] == pytest.approx(ddp["losses"], rel=RTOL)
    assert fsdp["scales"] == pytest.approx(ddp["scales"], rel=RTOL)
    assert ddp["losses"][-1] != ddp["losses"][0], "the model must actually train"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_resume_continues_identically(runs, strategy):
    run = runs[strategy]
    assert run["first"]["losses"] == pytest.approx(run["straight"]["losses"][:3], rel=RTOL)
    assert run["resumed"]["losses"] == pytest.approx(run["straight"]["losses"][3:], rel=RTOL)
    assert run["resumed"]["scales"] == pytest.approx(run["straight"]["scales"][3:], rel=RTOL)


def test_fsdp_checkpoint_is_sharded(runs):
    assert runs["fsdp"]["checkpoint_is_dir"] and not runs["ddp"]["checkpoint_is_dir"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_logit_scale_stays_clamped(runs, strategy):
    # Initialised at 4.8 > ln(100): clamped after the first step, never above after (float32 rounding).
    scales = runs[strategy]["straight"]["scales"]
    assert max(scales) <= math.log(100.0) + 1e-6
    assert scales[0] == pytest.approx(math.log(100.0), abs=1e-6)

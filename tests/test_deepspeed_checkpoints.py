"""Real DeepSpeed ZeRO-2 and ZeRO-3 checkpoint folders, written on the CPU by Lightning's DeepSpeedStrategy
(`tests/_deepspeed_ckpt_script.py`, one process, about 30 s on two cores): cliplab's loader consolidates them
to the weights the engine trained, `src/eval.py` evaluates them as it does the same weights in a file,
`ckpt_path=` / sweep resume pick them under `trainer=deepspeed`, and a crafted pickle in one is refused.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

pytest.importorskip("deepspeed")

from cliplab.checkpoints.find import checkpoint_kind  # noqa: E402
from cliplab.checkpoints.load import check_safe, load_checkpoint, load_module  # noqa: E402
from cliplab.checkpoints.resume import resume_path  # noqa: E402
from cliplab.eval.run import evaluate  # noqa: E402
from cliplab.models.safe_load import UnsafeCheckpointError  # noqa: E402
from cliplab.utils.errors import ConfigError, exit_on_user_error  # noqa: E402
from tests.conftest import compose_config  # noqa: E402
from tests.evals_fixtures import class_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("_deepspeed_ckpt_script.py")
STAGES = (2, 3)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deepspeed")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    cmd = [sys.executable, str(SCRIPT), str(out), *map(str, STAGES)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def folder(written: Path, stage: int) -> Path:
    return written / f"stage{stage}" / "checkpoints" / "deepspeed.ckpt"


def reference(written: Path, stage: int) -> dict:
    return torch.load(written / f"stage{stage}" / "reference.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("stage", STAGES)
def test_a_deepspeed_folder_consolidates_to_the_trained_weights(written, stage):
    path, ref = folder(written, stage), reference(written, stage)
    # DeepSpeed's own layout: the tag file, rank 0's model states (ZeRO-3 names them per rank)
    states = "zero_pp_rank_0_mp_rank_00_model_states.pt" if stage == 3 else "mp_rank_00_model_states.pt"
    assert (path / "latest").read_text() == "checkpoint" and (path / "checkpoint" / states).is_file()
    assert checkpoint_kind(path) == "deepspeed" and check_safe(path) == "deepspeed"
    checkpoint = load_checkpoint(path)
    assert checkpoint["global_step"] == ref["global_step"] == 2  # Lightning's keys, from the client state
    assert checkpoint["hyper_parameters"]["model"] == ref["hparams"]["model"]
    weights = load_module(path).model.state_dict()
    assert weights.keys() == ref["weights"].keys()
    assert all(torch.equal(weights[k], ref["weights"][k]) for k in weights)


def eval_results(checkpoint: Path, images: Path, out: Path) -> dict:
    """`python src/eval.py ckpt_path=<checkpoint> evals=[folder] ...`, as the entry point runs it."""
    overrides = [f"ckpt_path={checkpoint}", "evals=[folder]", f"evals.folder.benchmark.root={images}",
                 f"output_dir={out}", "num_workers=0", "device=cpu"]  # fmt: skip
    exit_on_user_error(evaluate, compose_config(overrides, "eval"))
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("stage", STAGES)
def test_eval_of_a_deepspeed_folder_equals_eval_of_its_weights_in_a_file(written, stage, tmp_path):
    ref = reference(written, stage)
    as_file = tmp_path / "same_weights.ckpt"
    state = {f"model.{name}": value for name, value in ref["weights"].items()}
    torch.save({"state_dict": state, "hyper_parameters": ref["hparams"], "global_step": 2}, as_file)
    images = class_folder(tmp_path / "images", 3, 4, separable=True)
    from_folder = eval_results(folder(written, stage), images, tmp_path / "folder")
    from_file = eval_results(as_file, images, tmp_path / "file")
    assert from_folder["rows"] == from_file["rows"] and from_folder["rows"]
    assert from_folder["produced_by"]["weights_sha256"] == from_file["produced_by"]["weights_sha256"]
    assert from_folder["produced_by"]["model"] == str(folder(written, stage))


def test_resume_picks_a_deepspeed_folder_under_deepspeed_only(written, tmp_path):
    run_dir = written / "stage2"
    cfg = compose_config(["trainer=deepspeed"], output_dir=tmp_path)
    for value in (str(run_dir), str(folder(written, 2))):  # a run directory (sweep resume), the folder
        with open_dict(cfg):
            cfg.ckpt_path = value
        assert resume_path(cfg) == str(folder(written, 2))
    cfg = compose_config([f"ckpt_path={run_dir}"], output_dir=tmp_path)  # the default single-device trainer
    with pytest.raises(ConfigError, match="resume it with trainer=deepspeed"):
        resume_path(cfg)


class Payload:
    """Unpickling this calls os.makedirs(marker): proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_a_crafted_pickle_in_a_real_deepspeed_folder_is_refused(written, tmp_path):
    # DeepSpeed's optimizer states pickle a few of its own plain-data classes, allowed by name; nothing else
    path = shutil.copytree(folder(written, 2), tmp_path / "evil.ckpt")
    marker, optim = tmp_path / "pwned", path / "checkpoint" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    states = torch.load(optim, map_location="cpu", weights_only=False)
    states["optimizer_state_dict"]["loss_scaler"] = Payload(marker)
    torch.save(states, optim)
    for load in (check_safe, load_checkpoint):
        with pytest.raises(UnsafeCheckpointError, match="allow_unsafe_pickle"):
            load(path)
    assert not marker.exists()

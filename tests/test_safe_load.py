"""Loading never runs code from a checkpoint; mismatches are explained with keys, shapes and the model."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from safetensors.torch import save_file

from cliplab.models.interop import build_clip, load_openclip_state_dict
from cliplab.models.safe_load import (
    CheckpointMismatchError,
    UnsafeCheckpointError,
    check_state_dict,
    load_file,
    load_state_dict,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


class Payload:
    """Unpickling this calls os.makedirs(marker): proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="allow_unsafe_pickle=True") as err:
        load_state_dict(path)
    assert "makedirs" in str(err.value)  # names what the file asked for
    assert not marker.exists()
    # The marker really detects execution: the explicit opt-in for trusted files runs the payload.
    load_file(path, allow_unsafe_pickle=True)
    assert marker.exists()


def test_safetensors_and_plain_tensor_pickles_load(tmp_path):
    tensors = {"a": torch.arange(3.0), "b.c": torch.ones(2, 2)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in tensors.items()}, "epoch": 2}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        loaded = load_state_dict(tmp_path / name)
        assert set(loaded) == set(tensors) and all(torch.equal(loaded[k], tensors[k]) for k in tensors)


def test_torchscript_archive_gives_its_weights(tmp_path):
    """OpenAI's released checkpoints are TorchScript archives; torch.load(weights_only=True) refuses them."""
    module = torch.nn.Linear(2, 3)
    torch.jit.script(module).save(str(tmp_path / "ViT-B-32.pt"))
    loaded = load_state_dict(tmp_path / "ViT-B-32.pt")
    assert set(loaded) == {"weight", "bias"} and torch.equal(loaded["weight"], module.weight.detach())


def test_lightning_and_compile_prefixes_are_stripped(tmp_path):
    state = {"model._orig_mod.visual.w": torch.zeros(1), "model._orig_mod.logit_scale": torch.zeros(())}
    torch.save({"state_dict": state, "global_step": 7}, tmp_path / "last.ckpt")
    assert set(load_state_dict(tmp_path / "last.ckpt")) == {"visual.w", "logit_scale"}


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_state_dict(tmp_path / "nope.pt")


def meta_model(name: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=f"model/{name}")  # build_clip builds no tokenizer
    with torch.device("meta"):
        return build_clip(cfg.model)


def test_wrong_checkpoint_names_keys_shapes_and_the_model_it_appears_to_be():
    tiny_weights = meta_model("tiny").state_dict()
    with pytest.raises(CheckpointMismatchError) as err:
        load_openclip_state_dict(meta_model("tiny_rn"), tiny_weights)
    message = str(err.value)
    assert "appears to be: the named model `tiny`" in message
    assert "missing keys" in message and "visual.trunk.stem.conv1.conv.weight" in message
    assert "unexpected keys" in message and "visual.trunk.cls_token" in message


def test_shape_mismatch_lists_both_shapes():
    model = torch.nn.Linear(4, 2)
    with pytest.raises(CheckpointMismatchError, match=r"weight: checkpoint \(3, 4\) vs model \(2, 4\)"):
        check_state_dict(model, {"weight": torch.zeros(3, 4), "bias": torch.zeros(2)})


# ---- every path that loads a checkpoint refuses a crafted pickle, in one line, and runs nothing -------

ROOT = Path(__file__).resolve().parents[1]


def crafted_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A Lightning-looking checkpoint whose hyperparameters would create `marker` when unpickled."""
    marker, path = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save(
        {"state_dict": {"w": torch.zeros(1)}, "global_step": 1, "hyper_parameters": Payload(marker)}, path
    )
    return path, marker


def run_entry_point(script: str, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "CLIPLAB_ROOT": str(tmp_path),
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, str(ROOT / "src" / script), *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def assert_one_line_refusal(proc: subprocess.CompletedProcess, marker: Path) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "allow_unsafe_pickle" in lines[0], lines
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not marker.exists()


@pytest.mark.parametrize("script", ["eval.py", "train.py"])
def test_eval_and_resume_refuse_a_crafted_checkpoint(tmp_path, script):
    path, marker = crafted_checkpoint(tmp_path)
    overrides = ["evals=[emoji]"] if script == "eval.py" else ["logger=csv", "data.num_workers=0"]
    assert_one_line_refusal(run_entry_point(script, tmp_path, f"ckpt_path={path}", *overrides), marker)


def test_resume_of_a_run_dir_and_sweep_resume_refuse_a_crafted_checkpoint(cfg_factory, tmp_path, monkeypatch):
    from cliplab.checkpoints.resume import resume_path
    from cliplab.sweeps import jobs

    path, marker = crafted_checkpoint(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    path.rename(tmp_path / "checkpoints" / "last.ckpt")
    from omegaconf import open_dict

    cfg = cfg_factory(["logger=csv"])
    with open_dict(cfg):
        cfg.sweep_resume = True
    monkeypatch.setattr(jobs, "_hydra_job", lambda: (True, str(tmp_path), "seed=1"))
    cfg = jobs.start_job(cfg).cfg  # sweep resume picks the job's newest checkpoint ...
    assert cfg.ckpt_path == str(tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="allow_unsafe_pickle"):  # ... which train() refuses
        resume_path(cfg)
    cfg.ckpt_path = str(tmp_path)  # a run directory
    with pytest.raises(UnsafeCheckpointError):
        resume_path(cfg)
    assert not marker.exists()


def test_pretrained_and_interop_refuse_a_crafted_checkpoint(cfg_factory, tmp_path):
    from cliplab.models.interop import load_openclip_checkpoint
    from cliplab.pipeline import build_module, load_pretrained

    path, marker = crafted_checkpoint(tmp_path)
    cfg = cfg_factory([f"pretrained={path}"])
    module = build_module(cfg)
    with pytest.raises(UnsafeCheckpointError):
        load_pretrained(module, cfg)
    with pytest.raises(UnsafeCheckpointError):
        load_openclip_checkpoint(module.model, path)
    assert not marker.exists()


def test_a_sharded_folder_with_a_crafted_metadata_pickle_is_refused(tmp_path):
    import pickle

    from cliplab.checkpoints.load import check_safe, load_checkpoint

    marker, folder = tmp_path / "pwned", tmp_path / "step_00000001.ckpt"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    torch.save({"global_step": 1}, folder / "meta.pt")
    for load in (check_safe, load_checkpoint):
        with pytest.raises(UnsafeCheckpointError, match="allow_unsafe_pickle") as err:
            load(folder)
        assert "\n" not in str(err.value)
    assert not marker.exists()

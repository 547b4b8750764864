"""Runs that survive, with real processes: `python src/train.py trainer=ddp_cpu` (2 gloo ranks) on uneven
shards with a corrupt sample finishes with equal step counts and equal metrics on both ranks; a run whose
process group is SIGKILLed mid-epoch and resumed from its last step checkpoint ends with the same sample
order and the same parameters as the uninterrupted run.

Each run is a few seconds of training on a very small CLIP (about 30 s with start-up on two cores).
"""

import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).with_name("helpers")
TRAIN_SIZES = [23, 17, 31, 9, 14]  # 94 pairs in uneven shards: rank 0 and rank 1 hold different counts
VAL_SIZES = [13, 8]  # 21: an odd number of validation samples over 2 ranks
WORDS = ["red", "green", "blue", "round", "square", "small", "large", "striped"]
# Parameter sums are float64 sums of float32 parameters: resumed runs agree to float32 rounding.
RTOL = 1e-6


def write_shards(directory: Path, sizes: list[int], seed: int, corrupt: set[int] = frozenset()) -> Path:
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    counts, n = {}, 0
    for s, size in enumerate(sizes):
        name = f"part-{s:05d}.tar"
        with tarfile.open(directory / name, "w") as tar:
            for _ in range(size):
                colour = rng.integers(0, 255, 3)
                pixels = np.clip(colour + rng.integers(-30, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="JPEG")
                image = b"\xff\xd8 broken" if n in corrupt else buffer.getvalue()
                caption = " ".join(rng.choice(WORDS, 3)).encode()
                for ext, data in (("jpg", image), ("txt", caption)):
                    info = tarfile.TarInfo(f"{n:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                n += 1
        counts[name] = size
    (directory / "sizes.json").write_text(json.dumps(counts))
    return directory


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shards")
    return write_shards(root / "train", TRAIN_SIZES, 0, corrupt={40}), write_shards(
        root / "val", VAL_SIZES, 1
    )


def overrides(shards, run_dir: Path, *extra: str) -> list[str]:
    train, val = shards
    return [
        "trainer=ddp_cpu",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
        f"data.train.urls={train}",
        f"data.val.urls={val}",
        "data.train.shuffle_buffer=16",
        "data.batch_size=8",
        "data.num_workers=1",
        "model.image_size=32",
        "model.image_tower.depth=2",
        "model.text_tower.layers=2",
        "model.image_tower.width=64",
        "model.text_tower.width=64",
        "model.embed_dim=64",
        "evals=none",
        "test=false",
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=0",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "callbacks.model_checkpoint.every_n_train_steps=3",
        "+callbacks.probe._target_=rank_probe.RankProbe",
        f"+callbacks.probe.out={run_dir}",
        *extra,
    ]


def launch(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(HELPERS)}
    env.pop("CLIPLAB_ROOT", None)
    # A session of its own: the probe's SIGKILL takes the whole process group, as a lost node would.
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


def probes(run_dir: Path) -> list[dict]:
    return [json.loads((run_dir / f"probe_rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def straight(shards, tmp_path_factory) -> list[dict]:
    run_dir = tmp_path_factory.mktemp("straight")
    proc = launch(overrides(shards, run_dir))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return probes(run_dir)


def test_two_ranks_on_uneven_shards_finish_with_equal_steps_and_metrics(straight):
    rank0, rank1 = straight
    assert rank0["finished"] and rank1["finished"]
    # 94 samples, batch 4 per rank: the slots hold 46 and 48 samples, the corrupt one is skipped
    assert rank0["batches_per_epoch"] == rank1["batches_per_epoch"] == {"0": 11, "1": 11}
    assert rank0["val_batches"] == rank1["val_batches"]
    assert rank0["global_step"] == rank1["global_step"] == 22
    assert rank0["samples_seen"] == rank1["samples_seen"] == 22 * 8
    assert rank0["metrics"]["val/loss"] == rank1["metrics"]["val/loss"]
    assert rank0["params"] == rank1["params"], "DDP keeps the replicas identical"


def test_ranks_see_disjoint_samples(straight):
    rank0, rank1 = straight
    assert not {s["tokens"] for s in rank0["steps"]} & {s["tokens"] for s in rank1["steps"]}


def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(shards, straight, tmp_path):
    kill_at = random.Random().choice([4, 5, 7, 8])  # a step after a checkpoint step (every 3), mid-epoch
    saved = kill_at - kill_at % 3
    proc = launch(overrides(shards, tmp_path, f"+callbacks.probe.kill_at_step={kill_at}"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.exists()
    proc = launch(overrides(shards, tmp_path, f"ckpt_path={last}"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    resumed = probes(tmp_path)
    for rank in (0, 1):
        after = [s for s in straight[rank]["steps"] if s["step"] > saved]
        assert [s["step"] for s in resumed[rank]["steps"]] == [s["step"] for s in after]
        assert [s["tokens"] for s in resumed[rank]["steps"]] == [s["tokens"] for s in after], "sample order"
        assert [s["images"] for s in resumed[rank]["steps"]] == [s["images"] for s in after], "augmentation"
        assert [s["rng"] for s in resumed[rank]["steps"]] == [s["rng"] for s in after], "random states"
        assert_same_end(resumed[rank], straight[rank])


def assert_same_end(resumed: dict, straight: dict) -> None:
    assert resumed["finished"] and resumed["global_step"] == straight["global_step"]
    assert resumed["samples_seen"] == straight["samples_seen"]
    assert resumed["flops_seen"] == pytest.approx(straight["flops_seen"], rel=1e-9)
    for name, value in straight["params"].items():
        assert resumed["params"][name] == pytest.approx(value, rel=RTOL, abs=1e-9), name


def test_sigterm_to_every_process_saves_exits_cleanly_and_resumes(shards, straight, tmp_path):
    # A scheduler's preemption signals every process of the job (both ranks and their loader workers)
    proc = launch(overrides(shards, tmp_path, "+callbacks.probe.sigterm_at_step=7"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    stopped = probes(tmp_path)
    assert stopped[0]["global_step"] == stopped[1]["global_step"] < straight[0]["global_step"]
    proc = launch(overrides(shards, tmp_path, "ckpt_path=last"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    for rank, resumed in enumerate(probes(tmp_path)):
        assert resumed["steps"][0]["step"] == stopped[rank]["global_step"] + 1
        assert_same_end(resumed, straight[rank])


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(shards, straight, tmp_path):
    # One node of a job preempted: only rank 1 gets the signal. Lightning's own end-of-batch check would
    # stop rank 1 alone, and rank 0 would wait in the next step's collective for ever.
    proc = launch(overrides(shards, tmp_path, "+callbacks.probe.sigterm_rank1_at_step=5"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    stopped = probes(tmp_path)
    assert stopped[0]["global_step"] == stopped[1]["global_step"] == 5
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()

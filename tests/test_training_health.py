"""Training health (cliplab.callbacks.training_health): a step with a NaN in one rank's batch is skipped on
every rank (parameters and optimizer state untouched), counted and logged, and training goes on; K such steps
in a row stop the run with one line, leaving the weights, last.ckpt and the exception checkpoint as they were
after the last finite step. Also: DataFaultLogger's totals over two ranks count each fault once.

One process in the test's own process; two CPU processes (gloo DDP) through `tests/_mp_health_script.py`
under torchrun (about 15 s on two cores, most of it importing).
"""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cliplab.callbacks import training_health
from cliplab.callbacks.training_health import TrainingDivergedError, TrainingHealth
from cliplab.utils.errors import ConfigError
from tests._mp_health_script import FAULTS, LOSS, NAN_STEP, STEPS, K, skip_one, stop_after_k
from tests._torchrun import torchrun

SCRIPT = Path(__file__).with_name("_mp_health_script.py")
ROOT = Path(__file__).resolve().parents[1]
CHANGED = [step != NAN_STEP for step in range(STEPS)]


def _check_skip_one(result: dict) -> None:
    assert result["error"] is None and result["global_step"] == STEPS  # training went on to the end
    assert result["params_changed"] == CHANGED  # the NaN step left every parameter as it was
    assert result["state_changed"] == CHANGED  # and the optimizer's moments and step counts
    assert result["metrics"]["train/skipped_steps"] == 1 and result["finite"]
    assert result["metrics"]["train/grad_norm"] > 0  # the last step's (finite) norm


def _check_stop_after_k(result: dict) -> None:
    # NaN from NAN_STEP on: K skips in a row, stopped at the logging step that ends the K-th
    assert result["global_step"] == NAN_STEP + K
    assert result["params_changed"] == [True] * NAN_STEP + [False] * K
    assert result["error"].startswith(
        f"training stopped at step {NAN_STEP + K}: {K} optimizer steps in a row"
    )
    assert (
        "callbacks.training_health.max_consecutive_skips" in result["error"] and "\n" not in result["error"]
    )
    assert result["weights_are_last_good"] and result["last_ckpt_is_last_good"]
    assert result["exception_ckpt_is_last_good"]


FEATURE_CACHE = {"mode": "feature_cache", "chunk_size": 2}


@pytest.mark.parametrize(
    ("optim", "accumulation"), [("fused", None), ("foreach", None), ("fused", FEATURE_CACHE)]
)
def test_nan_step_is_skipped_and_counted(tmp_path, optim, accumulation):
    # fused AdamW (the default) skips on the device; foreach AdamW through the host-side decision;
    # feature-cache accumulation goes through the same optimizer-step hooks
    extra = {"foreach": True} if optim == "foreach" else {}
    optim = {"_target_": "torch.optim.AdamW", "lr": 1e-3, **extra}
    result = skip_one(tmp_path, optim=optim, loss=LOSS, accumulation=accumulation)
    _check_skip_one(result)
    assert result["metrics"]["data/corrupt_image"] == len(FAULTS[0])


def test_consecutive_nan_steps_stop_and_keep_the_last_good_weights(tmp_path):
    _check_stop_after_k(stop_after_k(tmp_path))


def test_max_consecutive_skips_must_be_positive():
    with pytest.raises(ConfigError, match="max_consecutive_skips must be at least 1, got 0"):
        TrainingHealth(max_consecutive_skips=0)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[list[dict], str]:
    out = tmp_path_factory.mktemp("health")
    output = torchrun(SCRIPT, out)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)], output


def test_two_ranks_skip_the_same_step(two_ranks):
    # NaN in rank 1's batch only: both ranks skip it and stay identical
    results, _ = two_ranks
    for result in results:
        _check_skip_one(result["skip_one"])
    assert results[0]["skip_one"]["checksum"] == results[1]["skip_one"]["checksum"]


def test_two_ranks_stop_together_and_say_so_once(two_ranks):
    # NaN in rank 0's batches only: both ranks stop at the same step with the same error; the run's output
    # (both ranks' stdout and stderr) carries its line once
    results, output = two_ranks
    for result in results:
        _check_stop_after_k(result["stop_after_k"])
    line = f"error: {results[0]['stop_after_k']['error']}"
    assert output.count(line) == 1
    assert output.count("training stopped at step") == 1


def test_a_rank_specific_error_is_printed_by_every_rank(monkeypatch, capsys):
    from cliplab.utils import dist
    from cliplab.utils.errors import DataError, print_user_error

    monkeypatch.setattr(dist, "dist_info", lambda: dist.DistInfo(rank=1, world_size=2))
    print_user_error(DataError("shard-7.tar is missing"))
    print_user_error(TrainingDivergedError("training stopped at step 3"))
    assert (
        capsys.readouterr().err == "error: shard-7.tar is missing\n"
    )  # rank 1 leaves the shared one to rank 0


def test_fault_totals_count_each_fault_once(two_ranks):
    kinds = [kind for faults in FAULTS.values() for kind in faults]
    expected = {kind: kinds.count(kind) for kind in set(kinds)}
    expected["skipped_shards"] = expected["truncated_shard"]
    expected["skipped_samples"] = len(kinds) - expected["skipped_shards"]
    for result in two_ranks[0]:  # every rank logs the same totals, zero for the kinds nobody saw
        metrics = result["skip_one"]["metrics"]
        logged = {
            key.removeprefix("data/"): value for key, value in metrics.items() if key.startswith("data/")
        }
        assert {key: value for key, value in logged.items() if value} == expected
        assert len(logged) == 9


def test_counts_survive_a_resume(monkeypatch):
    """The counts are checkpointed: the run of skips continues across a resume; a finite step ends it."""
    monkeypatch.setattr(training_health, "is_logging_step", lambda trainer: True)
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([param], fused=True)
    trainer, module = SimpleNamespace(global_step=7), SimpleNamespace(log=lambda *args, **kwargs: None)

    def step(health: TrainingHealth, value: float) -> None:
        param.grad = torch.full((2,), value)
        health.on_before_optimizer_step(trainer, module, optimizer)
        optimizer.step()
        health.on_train_batch_end(trainer, module)

    health = TrainingHealth(max_consecutive_skips=2)
    step(health, 1.0)
    step(health, math.nan)
    state = health.state_dict()
    assert state == {"skipped_steps": 1, "consecutive_skips": 1}
    healed = TrainingHealth(max_consecutive_skips=2)
    healed.load_state_dict(state)
    step(healed, 1.0)  # a finite step ends the run of skips
    step(healed, math.nan)
    assert healed.state_dict() == {"skipped_steps": 2, "consecutive_skips": 1}
    again = TrainingHealth(max_consecutive_skips=2)
    again.load_state_dict(state)
    with pytest.raises(TrainingDivergedError, match="2 optimizer steps in a row"):
        step(again, math.nan)  # the second in a row, across the resume

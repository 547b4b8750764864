"""EMA and distillation compose with DDP and FSDP2 (two CPU processes, gloo, `tests/_mp_ema_script.py`):
the average is equal on every rank (DDP) and, gathered from its shards (FSDP2), equals the average of the
same sequence of live weights computed in one process; it is saved and resumed exactly; the teacher stays
frozen and out of the checkpoint."""

from pathlib import Path

import pytest
import torch

from tests._torchrun import torchrun
from tests.test_distill import _save_cliplab_teacher, _teacher_model_cfg
from tests.test_ema import _reference

SCRIPT = Path(__file__).with_name("_mp_ema_script.py")


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def ranks(request, tmp_path_factory) -> tuple[str, list[dict]]:
    out = tmp_path_factory.mktemp(f"ema_{request.param}")
    teacher = out / "teacher.ckpt"
    _save_cliplab_teacher(teacher, _teacher_model_cfg())
    torchrun(SCRIPT, request.param, out, teacher)
    return request.param, [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_average_equals_one_process_reference(ranks):
    _, results = ranks
    first = results[0]
    assert len(first["live"]) == 6 and first["num_updates"] == 6  # 3 steps per epoch, two epochs
    expected = _reference(first["live"], 0.9, warmup=True)
    for result in results:  # every rank gathers the same average, the one-process average of the sequence
        assert result["final"].keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(result["final"][key], value, rtol=1e-6, atol=1e-7)


def test_ranks_hold_their_copy(ranks):
    strategy, (rank0, rank1) = ranks
    for key, full in rank0["final"].items():
        own0, own1 = rank0["own"][key], rank1["own"][key]
        if strategy == "ddp" or full.ndim == 0:  # DDP, and FSDP2's replicated scalars: the whole tensor
            torch.testing.assert_close(own0, own1, rtol=0, atol=0)
            torch.testing.assert_close(own0, full, rtol=0, atol=0)
        else:  # FSDP2: each rank holds its dim-0 shard of the average, as of the live weights
            assert own0.shape[0] == -(-full.shape[0] // 2), key
            torch.testing.assert_close(torch.cat([own0, own1]), full, rtol=0, atol=0)


def test_saved_and_resumed_exactly(ranks):
    _, results = ranks
    for result in results:
        for key, value in result["saved"].items():
            torch.testing.assert_close(result["at_start"][key], value, rtol=0, atol=0)


def test_teacher_frozen_and_not_saved(ranks):
    _, results = ranks
    for result in results:
        assert result["teacher_unchanged"] and not result["teacher_in_state_dict"]
        assert len(result["distill"]) == 6 and all(v > 0 for v in result["distill"])

"""LoRA composes with DDP and FSDP2 (2 CPU processes, gloo, `tests/_mp_lora_script.py` under torchrun):
base weights bit-identical on every rank, adapters trained, and the two strategies take the same steps."""

import json
from pathlib import Path

import pytest

from tests._torchrun import torchrun

SCRIPT = Path(__file__).with_name("_mp_lora_script.py")


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("mp_lora")
    torchrun(SCRIPT, out)
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

"""State-dict keys are a public format: every named model's keys and shapes are snapshotted.

A layout change must be deliberate: regenerate with
`CLIPLAB_UPDATE_SNAPSHOTS=1 pytest tests/test_state_dict_keys.py` and commit the changed files in
tests/snapshots/ together with the change (and a loader for old checkpoints).
"""

import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from cliplab.models.interop import build_clip

CONF = Path(__file__).resolve().parents[1] / "conf"
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
NAMED = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
UPDATE = os.environ.get("CLIPLAB_UPDATE_SNAPSHOTS") == "1"


def key_shapes(name: str) -> dict[str, list[int]]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=f"model/{name}")  # build_clip builds no tokenizer
    with torch.device("meta"):
        model = build_clip(cfg.model)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", NAMED)
def test_state_dict_layout_matches_snapshot(name):
    path = SNAPSHOTS / f"{name}.json"
    current = key_shapes(name)
    if UPDATE:
        SNAPSHOTS.mkdir(exist_ok=True)
        lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in current.items()]
        path.write_text("{\n" + ",\n".join(lines) + "\n}\n")  # one key per line: readable diffs
    assert path.exists(), f"no snapshot for `{name}`; create it with CLIPLAB_UPDATE_SNAPSHOTS=1"
    saved = json.loads(path.read_text())
    added = sorted(set(current) - set(saved))
    removed = sorted(set(saved) - set(current))
    reshaped = sorted(k for k in set(saved) & set(current) if saved[k] != current[k])
    assert not (added or removed or reshaped), (
        f"state-dict layout of `{name}` changed: added {added[:5]}, removed {removed[:5]}, "
        f"reshaped {[(k, saved[k], current[k]) for k in reshaped[:5]]} "
        "(if deliberate: CLIPLAB_UPDATE_SNAPSHOTS=1, and keep old checkpoints loadable)"
    )
    assert list(saved) == list(current), f"key order of `{name}` changed"

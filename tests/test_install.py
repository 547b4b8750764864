"""The environment the Makefile builds: a torch + torchvision pair that loads, timm models that build."""

from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_torchvision_ops_load_against_torch():
    import torch
    import torchvision.ops

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_timm_builds_a_clip_tower():
    import timm
    import torch

    model = timm.create_model(
        "vit_base_patch16_clip_224", pretrained=False, img_size=32, depth=1, num_classes=8
    )
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 8)


def _name(requirement: str) -> str:
    for sep in "=<>!~[ ;":
        requirement = requirement.split(sep)[0]
    return requirement.strip().lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    """conda users get the same pins: every conda package with a version must agree with pyproject."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {_name(r): r for r in project["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(line.startswith("-e .") for line in pip), "environment.yml must install the project itself"
    aliases = {"pytorch": "torch", "pytorch-lightning": "pytorch-lightning"}
    for dep in conda:
        name = aliases.get(_name(dep), _name(dep))
        if name in ("python", "pip"):
            continue
        assert name in pins, f"environment.yml lists {name}, which pyproject.toml does not depend on"
        if "==" in pins[name]:
            assert pins[name].split("==")[1] in dep, f"{dep} disagrees with pyproject's {pins[name]}"

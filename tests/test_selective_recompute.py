"""Selective recomputation (cliplab.models.recompute) changes memory, never results or checkpoint keys."""

import pytest
import torch

from cliplab.models.image_tower import TimmImageTower
from cliplab.models.recompute import SelectiveRecomputeSequential
from cliplab.models.text_tower import CLIPTextTower

IMAGE = dict(
    model_name="vit_base_patch16_clip_224", embed_dim=32, image_size=32, width=64, depth=2, num_heads=2
)
TEXT = dict(embed_dim=32, context_length=8, vocab_size=100, width=64, layers=2, heads=2)


def _tower(tower_cls, settings: dict, selective: bool):
    torch.manual_seed(0)
    return tower_cls(**settings, selective_recompute=selective)


def _image_tower(selective: bool) -> TimmImageTower:
    return _tower(TimmImageTower, IMAGE, selective)


def _text_tower(selective: bool) -> CLIPTextTower:
    return _tower(CLIPTextTower, TEXT, selective)


def _grads(tower, inputs) -> dict[str, torch.Tensor]:
    tower.train()
    tower(inputs).square().sum().backward()
    return {name: p.grad for name, p in tower.named_parameters()}


@pytest.mark.parametrize("kind", ["image", "text"])
def test_same_gradients_and_keys(kind):
    torch.manual_seed(1)
    if kind == "image":
        build, inputs = _image_tower, torch.randn(3, 3, 32, 32)
    else:
        build, inputs = _text_tower, torch.randint(1, 99, (3, 8))
    plain, selective = build(False), build(True)
    assert plain.state_dict().keys() == selective.state_dict().keys()
    expected, got = _grads(plain, inputs), _grads(selective, inputs)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


def test_image_tower_switches_its_blocks_and_back():
    tower = _image_tower(True)
    assert type(tower.trunk.blocks) is SelectiveRecomputeSequential
    with torch.no_grad():  # inference runs the plain blocks
        assert tower(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    assert type(_image_tower(False).trunk.blocks) is torch.nn.Sequential

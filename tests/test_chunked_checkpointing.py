"""Chunked full checkpointing: blocks recomputed one batch slice at a time, same outputs and gradients."""

import copy

import pytest
import torch

from cliplab.models.image_tower import TimmImageTower
from cliplab.models.text_tower import CLIPTextTower
from tests.helpers.numerics import assert_close_reordered


def _text_tower(**kwargs) -> CLIPTextTower:
    torch.manual_seed(0)
    return CLIPTextTower(16, context_length=12, vocab_size=100, width=32, heads=4, layers=2, **kwargs)


def _image_tower(**kwargs) -> TimmImageTower:
    torch.manual_seed(0)
    return TimmImageTower(
        "vit_base_patch32_clip_224", 16, image_size=64, depth=2, width=32, num_heads=4, **kwargs
    )


def _tokens(batch: int = 8) -> torch.Tensor:
    tokens = torch.randint(1, 98, (batch, 12), generator=torch.Generator().manual_seed(1))
    tokens[:, -1] = 99  # end of text (the largest id)
    return tokens


def _images(batch: int = 8) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _output_and_grads(tower, inputs):
    out = tower(inputs)
    out.pow(2).sum().backward()
    return out.detach(), {n: p.grad for n, p in tower.named_parameters()}


@pytest.mark.parametrize(
    "make, inputs, blocks",
    [
        (_text_tower, _tokens, lambda t: t.transformer.resblocks),
        (_image_tower, _images, lambda t: t.trunk.blocks),
    ],
)
def test_same_gradients_and_one_slice_recomputed_at_a_time(make, inputs, blocks):
    plain = make()
    chunked = make(grad_checkpointing=True, checkpoint_chunks=4)
    chunked.load_state_dict(copy.deepcopy(plain.state_dict()))
    assert chunked.state_dict().keys() == plain.state_dict().keys()

    # Batch rows each block call saw, forward and recomputation in backward (a pre-hook: the recomputation
    # stops as soon as it has what backward needs, before post-hooks would run).
    rows_seen = []
    for block in blocks(chunked):
        block.register_forward_pre_hook(lambda mod, args: rows_seen.append(args[0].shape[0]))
    ref_out, ref_grads = _output_and_grads(plain, inputs())
    out, grads = _output_and_grads(chunked, inputs())

    assert_close_reordered(out, ref_out, rtol=1e-5)
    for name, grad in ref_grads.items():
        assert_close_reordered(grads[name], grad, msg=name)
    # 2 blocks x 4 slices of 2 rows, in the forward and again in the backward: never the whole batch
    assert rows_seen == [2] * 16


def test_chunks_need_a_vit():
    with pytest.raises(ValueError, match="checkpoint_chunks needs a ViT"):
        TimmImageTower("resnet50_clip", 16, image_size=64, layers=[1, 1, 1, 1], checkpoint_chunks=2)


def test_turning_checkpointing_off_restores_plain_blocks():
    tower = _image_tower(grad_checkpointing=True, checkpoint_chunks=2)
    tower.set_grad_checkpointing(False)
    assert type(tower.trunk.blocks) is torch.nn.Sequential
    assert not tower.trunk.grad_checkpointing

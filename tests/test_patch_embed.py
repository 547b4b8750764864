"""The ViT patch embedding as one matmul on the CPU: the convolution's output and weight gradients, the
same parameters (and state-dict keys), and the convolution itself where the layer is not patch-wise."""

import pytest
import torch
from torch import nn

from cliplab.models.layers import PatchConv2d


@pytest.mark.parametrize("bias", [False, True])
def test_patch_matmul_matches_the_convolution(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 4, 4, bias=bias)
    patch = PatchConv2d.replacing(conv)
    assert isinstance(patch, PatchConv2d) and patch.weight is conv.weight and patch.bias is conv.bias
    x = torch.randn(2, 3, 12, 16)
    expected, got = nn.Conv2d.forward(conv, x), patch(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    grads = [
        torch.autograd.grad((out * torch.arange(out.numel()).view_as(out)).sum(), conv.weight)[0]
        for out in (got, expected)
    ]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-4)


def test_overlapping_padded_or_ragged_layers_run_the_convolution():
    assert type(PatchConv2d.replacing(nn.Conv2d(3, 8, 4, 2))) is nn.Conv2d
    assert type(PatchConv2d.replacing(nn.Conv2d(3, 8, 4, 4, padding=1))) is nn.Conv2d
    patch = PatchConv2d.replacing(nn.Conv2d(3, 8, 4, 4))
    x = torch.randn(1, 3, 10, 10)  # 2 pixels left over: the convolution drops them
    torch.testing.assert_close(patch(x), nn.Conv2d.forward(patch, x))


def test_vit_towers_embed_patches_with_it_and_keep_timm_keys():
    from cliplab.models.image_tower import TimmImageTower

    tower = TimmImageTower(
        "vit_base_patch16_clip_224", embed_dim=16, image_size=32, width=32, depth=1, num_heads=2
    )
    assert isinstance(tower.trunk.patch_embed.proj, PatchConv2d)
    assert "trunk.patch_embed.proj.weight" in tower.state_dict()

"""The ViT/ResNet options of the image tower (FLIP, checkpointing, LiT); the contract of every image tower
config is in tests/test_contracts.py."""

import pytest
import torch
from torch import nn

from cliplab.models.image_tower import TimmImageTower


def small_vit(**kwargs) -> TimmImageTower:
    torch.manual_seed(0)
    args = dict(image_size=32, width=64, depth=2, num_heads=2)
    return TimmImageTower("vit_base_patch16_clip_224", 32, **{**args, **kwargs})


def small_rn(**kwargs) -> TimmImageTower:
    torch.manual_seed(0)
    tiny = dict(layers=[1, 1, 1, 1], width_factor=0.25)
    return TimmImageTower("resnet50_clip", 32, image_size=64, **tiny, **kwargs)


def test_unknown_model_name_lists_similar_ones():
    with pytest.raises(ValueError, match="vit_base_patch32_clip_224"):
        TimmImageTower("vit_base_patch32_clipp", 32)


def test_unknown_pool_or_proj_is_refused():
    with pytest.raises(ValueError, match="proj"):
        small_vit(proj="conv")
    with pytest.raises(ValueError, match="patch_dropout"):
        small_rn(patch_dropout=0.5)


@pytest.mark.parametrize("make", [small_vit, small_rn], ids=["vit", "rn"])
def test_grad_checkpointing_changes_nothing_numerically(make):
    tower = make().train()
    images = torch.randn(2, 3, tower.image_size, tower.image_size)
    grads = []
    for enable in (False, True):
        tower.zero_grad()
        tower.set_grad_checkpointing(enable)
        torch.manual_seed(1)
        tower(images).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in tower.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_patch_dropout_keeps_class_token_and_only_trains():
    tower = small_vit(patch_dropout=0.5)
    seen = []
    tower.trunk.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    images = torch.randn(2, 3, 32, 32)  # 2x2 = 4 patches + class token
    tower.train()(images)
    tower.eval()(images)
    assert seen == [1 + 2, 1 + 4]
    torch.testing.assert_close(tower(images), tower(images))  # eval is deterministic


def test_other_image_size_sizes_the_position_table():
    tower = small_vit(image_size=48)
    assert tower.trunk.pos_embed.shape[1] == 1 + 3 * 3
    assert tower(torch.randn(1, 3, 48, 48)).shape == (1, 32)


def test_quick_gelu_override():
    tower = small_vit(act="quick_gelu")
    assert type(tower.trunk.blocks[0].mlp.act).__name__ == "QuickGELU"


def test_freeze_norm_stats_keeps_running_statistics():
    tower = small_rn()
    tower.lock(unlocked_groups=0, freeze_norm_stats=True)
    tower.train()
    bn = next(m for m in tower.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    tower(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(bn.running_mean, before)
    assert "trunk.stem.conv1.bn.num_batches_tracked" in tower.state_dict()  # layout unchanged


@pytest.mark.parametrize("pool,proj", [("avg", "linear"), ("attn", "mlp"), ("avg", "none")])
def test_generic_timm_model_pool_and_proj(pool, proj):
    tower = TimmImageTower("resnet18", 16, image_size=64, pool=pool, proj=proj)
    out = tower(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, tower.output_dim)
    assert tower.output_dim == (512 if proj == "none" else 16)


def _conv_weights(tower: nn.Module) -> list[torch.Tensor]:
    return [p for p in tower.parameters() if p.dim() == 4]


def test_channels_last_changes_strides_not_results():
    """NHWC weights and inputs: same keys, same values, same outputs and gradients as the NCHW tower."""
    images = torch.randn(4, 3, 64, 64)
    towers = [small_rn(), small_rn(channels_last=True)]
    assert towers[0].state_dict().keys() == towers[1].state_dict().keys()
    weights = _conv_weights(towers[1])
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not all(w.is_contiguous() for w in weights)  # really another layout (not only 1x1 kernels)
    outs, grads = [], []
    for tower in towers:
        out = tower.train()(images)
        out.square().sum().backward()
        outs.append(out)
        grads.append(torch.cat([p.grad.flatten() for p in tower.parameters()]))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)
    assert all(w.grad.is_contiguous(memory_format=torch.channels_last) for w in weights)


def test_channels_last_survives_loading_a_contiguous_state_dict():
    tower = small_rn(channels_last=True)
    source = small_rn()
    for p in source.parameters():
        p.data.add_(1.0)
    tower.load_state_dict(source.state_dict())
    for (name, ours), theirs in zip(tower.state_dict().items(), source.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(tower))


def test_channels_last_is_refused_for_vits():
    with pytest.raises(ValueError, match="channels_last applies to convolutional towers"):
        small_vit(channels_last=True)

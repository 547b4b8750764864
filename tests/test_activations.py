"""QuickGELU: one fused silu pass per direction, same values and gradients as open_clip's `x * sigmoid(1.702 x)`."""

import pytest
import torch
from open_clip.transformer import QuickGELU as OpenClipQuickGELU

from cliplab.models.image_tower import TimmImageTower
from cliplab.models.layers import QuickGELU


def test_gradients_are_exact_in_float64():
    x = torch.randn(16, 40, dtype=torch.float64, requires_grad=True) * 4
    assert torch.autograd.gradcheck(QuickGELU(), (x.detach().requires_grad_(),))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_matches_open_clip_forward_and_backward(dtype, tol):
    x = (torch.randn(8, 50, 256) * 3).to(dtype)
    ours_in, ref_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, ref = QuickGELU()(ours_in), OpenClipQuickGELU()(ref_in)
    assert ours.dtype == ref.dtype == dtype
    grad = torch.randn_like(ref)
    ours.backward(grad)
    ref.backward(grad)
    scale = ref.float().abs().max()
    assert (ours.float() - ref.float()).abs().max() <= tol * scale
    assert (ours_in.grad.float() - ref_in.grad.float()).abs().max() <= tol * ref_in.grad.float().abs().max()


def test_timm_image_towers_use_it_without_changing_keys():
    tower = TimmImageTower("vit_base_patch32_clip_224", 32, image_size=64, depth=1, act="quick_gelu")
    assert type(tower.trunk.blocks[0].mlp.act) is QuickGELU
    plain = TimmImageTower("vit_base_patch32_clip_224", 32, image_size=64, depth=1)
    assert tower.state_dict().keys() == plain.state_dict().keys()

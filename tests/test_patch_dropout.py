"""FLIP patch dropout (`model.image_tower.patch_dropout`): a share of the patch tokens dropped in training only."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from cliplab.utils.errors import ConfigError
from cliplab.validate import validate
from tests.conftest import compose_config


def tiny_vit(cfg_factory, rate: float):
    """The default model's ViT tower (64 px, patch 16: 16 patches) from its config, seeded."""
    cfg = cfg_factory([f"model.image_tower.patch_dropout={rate}"])
    torch.manual_seed(0)
    return instantiate(cfg.model.image_tower, _convert_="object")


def tokens_reaching_blocks(tower, images) -> list[int]:
    seen = []
    hook = tower.trunk.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    tower(images)
    hook.remove()
    return seen


@pytest.mark.parametrize("rate, kept", [(0.5, 8), (0.75, 4), (0.25, 12)])
def test_training_drops_the_stated_share_of_patches(cfg_factory, rate, kept):
    tower = tiny_vit(cfg_factory, rate).train()
    images = torch.randn(3, 3, 64, 64)
    prefix = tower.trunk.num_prefix_tokens  # the tiny ViT has a class token (kept, as in FLIP)
    assert tokens_reaching_blocks(tower, images) == [prefix + kept]  # of 16 patches
    assert tokens_reaching_blocks(tower.eval(), images) == [prefix + 16]


def test_evaluation_is_identical_with_and_without_patch_dropout(cfg_factory):
    plain, dropping = tiny_vit(cfg_factory, 0.0), tiny_vit(cfg_factory, 0.5)
    dropping.load_state_dict(plain.state_dict())
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        reference = plain.eval()(images)
        torch.testing.assert_close(dropping.eval()(images), reference, rtol=0, atol=0)
        # and in training the option does change the features (the hook above counts why)
        assert not torch.allclose(dropping.train()(images), plain.train()(images))


def test_every_image_tower_takes_the_option():
    for model in ("tiny", "tiny_rn", "vit_b32", "rn50"):
        cfg = compose_config([f"model={model}"])
        assert cfg.model.image_tower.patch_dropout == 0.0


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["model=tiny_rn", "model.image_tower.patch_dropout=0.5"], "only ViT towers have; resnet50_clip"),
        (["model.image_tower.patch_dropout=1.0"], "must be a number in [0, 1)"),
        (["model.image_tower.patch_dropout=-0.1"], "must be a number in [0, 1)"),
        (["model.image_tower.patch_dropout=half"], "must be a number in [0, 1)"),
    ],
)
def test_bad_patch_dropout_is_one_line(cfg_factory, overrides, fragment):
    with pytest.raises(ConfigError) as err:
        validate(cfg_factory(overrides))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_vit_patch_dropout_is_valid(cfg_factory):
    validate(cfg_factory(["model=vit_b32", "model.image_tower.patch_dropout=0.5"]))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    import json

    from tests._torchrun import torchrun

    out = tmp_path_factory.mktemp("mp_patch_dropout") / "result.json"
    torchrun(Path(__file__).with_name("_mp_patch_dropout_script.py"), out)
    return json.loads(out.read_text())


def test_patch_dropout_trains_alike_under_ddp_and_fsdp2(two_ranks):
    ddp, fsdp, plain = two_ranks["ddp"], two_ranks["fsdp"], two_ranks["ddp_no_dropout"]
    assert len(ddp["losses"]) == 6  # 2 epochs x 3 steps on each rank
    assert fsdp["losses"] == pytest.approx(ddp["losses"], rel=1e-4)
    # Sums of whole tensors. AdamW moves every element by about lr whatever its gradient's size, so
    # reduction-order noise in a near-zero gradient can flip one element's step: 2 lr (lr 5e-3, the
    # OPTIM of _mp_train_script). Seen: 1.3e-3 on an AMX host. A wrong gradient moves many elements.
    one_flipped_step = 2 * 5e-3
    assert fsdp["image_weights"] == pytest.approx(ddp["image_weights"], rel=1e-3, abs=one_flipped_step)
    # and the option is live under the strategy: without it the same run trains differently
    assert plain["losses"][0] != pytest.approx(ddp["losses"][0], rel=1e-4)

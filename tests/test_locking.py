"""Locked towers (LiT, `model.lock_image` / `model.lock_text`): open_clip's choice of trainable parameters,
locked weights bit-identical through real training steps and a resume, bad options stopped with one line."""

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from open_clip.model import _build_text_tower, _build_vision_tower
from open_clip.timm_model import TimmModel
from torch import nn

from cliplab.lit.module import CLIPModule
from cliplab.models.image_tower import TimmImageTower
from cliplab.models.interop.openclip_export import text_cfg, vision_cfg
from cliplab.models.interop.visual_keys import tower_to_openai_visual
from cliplab.models.locking import group_count, lock_tower
from cliplab.models.text_tower import CLIPTextTower
from cliplab.utils.errors import ConfigError
from cliplab.validate import validate
from tests._tiny import quiet_trainer
from tests._torchrun import torchrun


def trainable(module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def openai_names(tower: TimmImageTower) -> dict[str, str]:
    """cliplab name -> OpenAI / open_clip name, from the interop exporter (one output key per state-dict key)."""
    exported = [k.removeprefix("visual.") for k in tower_to_openai_visual(tower)]
    return dict(zip(tower.state_dict(), exported))


def tiny_vit() -> TimmImageTower:
    return TimmImageTower(
        "vit_base_patch16_clip_224", 32, image_size=32, width=64, depth=3, num_heads=2, pool="token"
    )


def tiny_rn() -> TimmImageTower:
    return TimmImageTower("resnet50_clip", 32, image_size=64, layers=[1, 1, 1, 1], width_factor=0.25)


def test_vit_groups_are_open_clip_vision_transformer_groups():
    ours = tiny_vit()
    cfg, quick = vision_cfg(ours)
    theirs = _build_vision_tower(32, cfg, quick_gelu=bool(quick))  # open_clip's VisionTransformer
    names = openai_names(ours)
    assert group_count(ours) == 1 + 2 + 1 + 1  # stem, 2 blocks, last block + ln_post, proj
    for unlocked in range(group_count(ours) + 1):
        ours.lock(unlocked_groups=unlocked)
        theirs.lock(unlocked_groups=unlocked)
        assert {names[n] for n in trainable(ours)} == trainable(theirs), unlocked


def test_resnet_groups_are_open_clip_modified_resnet_and_timm_model_groups():
    # Whole tower: open_clip's ModifiedResNet (the CLIP ResNet), batch-norm statistics frozen alike.
    ours = tiny_rn()
    cfg, _ = vision_cfg(ours)
    theirs = _build_vision_tower(32, cfg)
    ours.lock(unlocked_groups=0, freeze_norm_stats=True)
    theirs.lock(unlocked_groups=0, freeze_bn_stats=True)
    assert not trainable(ours) and not trainable(theirs)
    names = {v: k for k, v in openai_names(ours).items()}
    frozen_theirs = {
        names[f"{n}.weight"] for n, m in theirs.named_modules() if type(m).__name__ == "FrozenBatchNorm2d"
    }
    frozen_ours = {f"{n}.weight" for n, m in ours.named_modules() if m in ours._frozen_norms}
    assert frozen_ours == frozen_theirs and len(frozen_ours) == 3 + 4 * 4  # stem, 4 blocks (with shortcut)
    # Partial locking (ModifiedResNet has none): open_clip's TimmModel on the same timm trunk (RN50, on meta).
    with torch.device("meta"):
        ours = TimmImageTower("resnet50_clip", 1024, image_size=224)
        theirs = TimmModel("resnet50_clip", 1024, image_size=224, pool="token", proj=None)
    assert group_count(ours) == 1 + 16 + 1  # stem, 3 + 4 + 6 + 3 blocks, attention pool
    for unlocked in range(group_count(ours) + 1):
        ours.lock(unlocked_groups=unlocked)
        theirs.requires_grad_(True)  # TimmModel.lock only ever freezes
        theirs.lock(unlocked_groups=unlocked)
        assert trainable(ours) == trainable(theirs), unlocked


def test_text_groups_are_open_clip_text_transformer_groups():
    torch.manual_seed(0)
    ours = CLIPTextTower(32, context_length=8, vocab_size=64, width=32, layers=3, heads=2)
    cfg, quick = text_cfg(ours)
    theirs = _build_text_tower(32, cfg, quick_gelu=quick)
    assert group_count(ours) == 1 + 2 + 1 + 1
    for unlocked in range(group_count(ours) + 1):
        ours.lock(unlocked_groups=unlocked)
        theirs.lock(unlocked_layers=unlocked, freeze_layer_norm=True)
        assert trainable(ours) == trainable(theirs), unlocked
    # freeze_layer_norm=false: the LayerNorms of the locked layers still train, nothing else does
    lock_tower(ours, 1, freeze_layer_norm=False)
    norms = {n for n, _ in ours.named_parameters() if ".ln_" in n or n.startswith("ln_final")}
    assert trainable(ours) == norms | {"text_projection"}


# ---- through the real training step ------------------------------------------------------------------

TEXT = {
    "_target_": "cliplab.models.text_tower.CLIPTextTower",
    "embed_dim": 16,
    "context_length": 8,
    "vocab_size": 64,
    "width": 32,
    "layers": 2,
    "heads": 2,
}
VIT = {
    "_target_": "cliplab.models.image_tower.TimmImageTower",
    "model_name": "vit_base_patch16_clip_224",
    "embed_dim": 16,
    "image_size": 32,
    "width": 32,
    "depth": 2,
    "num_heads": 2,
}
RN = {
    "_target_": "cliplab.models.image_tower.TimmImageTower",
    "model_name": "resnet50_clip",
    "embed_dim": 16,
    "image_size": 32,
    "layers": [1, 1, 1, 1],
    "width_factor": 0.25,
}
CASES = {
    # image: all but the projection locked; text: locked whole
    "vit": (VIT, {"unlocked_groups": 1}, {"unlocked_layers": 0}),
    # image locked whole with its batch-norm statistics; text: last block, final LayerNorm and projection train
    "rn": (RN, {"unlocked_groups": 0, "freeze_bn_stats": True}, {"unlocked_layers": 2}),
}
LIT = (VIT, {"unlocked_groups": 0}, None)  # LiT itself: the image tower locked whole, the text tower trains


class _Batches(torch.utils.data.Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(i)
        return torch.randn(4, 3, 32, 32, generator=gen), torch.randint(1, 63, (4, 8), generator=gen)


def _fit(module: CLIPModule, root, max_steps: int, ckpt_path=None) -> pl.Trainer:
    trainer = quiet_trainer(max_steps=max_steps, default_root_dir=str(root))
    loader = torch.utils.data.DataLoader(_Batches(), batch_size=None)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    return trainer


def _module(case: str, accumulation: dict | None = None) -> CLIPModule:
    image, lock_image, lock_text = LIT if case == "lit" else CASES[case]
    model = {
        "_target_": "cliplab.models.clip.CLIP",
        "embed_dim": 16,
        "image_tower": image,
        "text_tower": TEXT,
        "lock_image": lock_image,
        "lock_text": lock_text,
    }
    optim = {"_target_": "torch.optim.AdamW", "lr": 1e-2, "weight_decay": 0.1}
    loss = {"_target_": "cliplab.losses.ClipLoss"}
    return CLIPModule(model=model, loss=loss, optim=optim, accumulation=accumulation)


@pytest.mark.parametrize("case", sorted(CASES))
def test_locked_parameters_stay_bit_identical_and_get_no_optimizer_state(case, tmp_path):
    pl.seed_everything(0)
    module = _module(case)
    module.configure_model()
    state = {k: v.clone() for k, v in module.model.state_dict().items()}
    locked = {n for n, p in module.model.named_parameters() if not p.requires_grad}
    assert locked and trainable(module.model)
    trainer = _fit(module, tmp_path, max_steps=2)

    after = module.model.state_dict()
    for name in locked:
        assert torch.equal(after[name], state[name]), name
    assert all(not torch.equal(after[n], state[n]) for n in trainable(module.model) if n != "logit_scale")
    if case == "rn":  # running statistics frozen with the locked batch norms
        stats = [k for k in state if k.startswith("visual.") and "running_" in k]
        assert stats and all(torch.equal(after[k], state[k]) for k in stats)
    optimizer = trainer.optimizers[0]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    params = dict(module.model.named_parameters())
    # the locked parameters are in no group (no weight decay) and have no optimizer state
    assert in_optimizer == {id(params[n]) for n in trainable(module.model)}
    assert all(id(p) in in_optimizer for p in optimizer.state)

    # Resumed from a checkpoint: rebuilt from the config, still locked, still unchanged after more steps.
    ckpt = tmp_path / "two.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = _module(case)
    _fit(resumed, tmp_path, max_steps=3, ckpt_path=str(ckpt))
    assert {n for n, p in resumed.model.named_parameters() if not p.requires_grad} == locked
    final = resumed.model.state_dict()
    assert all(torch.equal(final[n], state[n]) for n in locked)


def test_feature_cache_accumulation_with_a_locked_tower(tmp_path):
    """GradCache re-runs both towers per chunk; a locked one has no graph to back-propagate through."""
    pl.seed_everything(0)
    module = _module("lit", accumulation={"mode": "feature_cache", "chunk_size": 2})
    module.configure_model()
    state = {k: v.clone() for k, v in module.model.state_dict().items()}
    _fit(module, tmp_path, max_steps=2)
    after = module.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items() if k.startswith("visual."))
    assert not torch.equal(after["text.text_projection"], state["text.text_projection"])


# ---- DDP and FSDP2 (2 CPU processes, gloo) --------------------------------------------------------------


@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> dict:
    """tests/_mp_lock_script.py under torchrun: DDP and FSDP2 runs with both towers partly locked (~45 s)."""
    out = tmp_path_factory.mktemp("lock_mp")
    torchrun(Path(__file__).with_name("_mp_lock_script.py"), out, timeout=400)
    return json.loads((out / "result.json").read_text())


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_locked_towers_train_under_ddp_and_fsdp2(distributed, strategy):
    run = distributed[strategy]
    # FSDP2 shards units that mix locked and trainable parameters (the towers' own units)
    assert "visual.head.proj.weight" in run["trainable"] and "visual.trunk.cls_token" in run["locked"]
    assert "text.ln_final.weight" in run["trainable"] and "text.token_embedding.weight" in run["locked"]
    assert run["changed"] == run["trainable"]  # every trainable parameter moved, no locked one did
    assert run["losses"] == pytest.approx(distributed["ddp"]["losses"], rel=1e-5)


def test_fsdp2_resume_keeps_towers_locked(distributed):
    run = distributed["fsdp"]
    assert run["resumed_locked"] == run["locked"]
    assert set(run["resumed_changed"]) <= set(run["trainable"]) and run["resumed_changed"]


# ---- bad options: one line at start-up -----------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (
            ["model.lock_image={unlocked_groups:7}"],  # the tiny ViT: stem, 4 blocks (last + norm), proj
            "model.lock_image.unlocked_groups=7 but the tower has 6 lock groups; use at most 6",
        ),
        (
            ["model.lock_text={unlocked_layers:9}"],
            "model.lock_text.unlocked_layers=9 but the tower has 6 lock groups",
        ),
        (["model=tiny_rn", "model.lock_image={unlocked_groups:7}"], "the tower has 6 lock groups"),
        (["model.lock_image={unlocked_group:1}"], "unknown option(s) ['unlocked_group']"),
        (["model.lock_text={unlocked_layers:-1}"], "must be a whole number >= 0"),
        (["model.lock_image={freeze_bn_stats:maybe}"], "must be true or false"),
        (["model.lock_text=3"], "must be null or a mapping"),
    ],
)
def test_bad_lock_options_are_one_line(cfg_factory, overrides, fragment):
    with pytest.raises(ConfigError) as err:
        validate(cfg_factory(overrides))
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [["lock=lit"], ["model=tiny_rn", "lock=lit"], ["lock=lit", "model.lock_image.unlocked_groups=6"]],
)
def test_lit_recipe_is_valid(cfg_factory, overrides):
    validate(cfg_factory(overrides))

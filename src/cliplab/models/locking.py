"""Locked towers (LiT): freeze a tower except its last N parameter groups, with open_clip's groups.

The groups, from input to output, are those open_clip's `lock_image_tower` / `lock_text_tower` use for the
same architecture, so `unlocked_groups=N` trains the same parameters as in open_clip:
- ViT image towers (open_clip `VisionTransformer.lock`): the stem (patch embedding, class token, positional
  embedding, pre-norm), each block, the last block together with the final norm (and any pooling timm
  adds after the blocks), then the projection head alone.
- Other timm image towers (open_clip `TimmModel.lock`): timm's fine-grained groups of the trunk (`group_matcher()`,
  e.g. the stem, each ResNet block, the CLIP ResNet's attention pool); a head of ours joins the last group,
  as TimmModel's head trains whenever anything does.
- The CLIP text tower (open_clip `lock_text_tower`): the embeddings, each block, the last block with the final
  LayerNorm, then the projection alone. Hugging Face text towers use their own `lock()`.
`unlocked_groups=0` locks the whole tower, head included (as open_clip's VisionTransformer, ModifiedResNet and
text tower do; its TimmModel alone leaves its head trainable). A locked parameter gets `requires_grad=False`,
so the optimizer (`cliplab.lit.param_groups`) gives it no state and no weight decay, DDP no gradient bucket.
"""

import numbers

from timm.models import group_parameters
from torch import nn

from cliplab.utils.errors import ConfigError

# The options of `model.lock_image` / `model.lock_text` (null: the tower trains), with their defaults.
IMAGE_OPTIONS = {"unlocked_groups": 0, "freeze_bn_stats": False}
TEXT_OPTIONS = {"unlocked_layers": 0, "freeze_layer_norm": True}


def image_groups(tower: nn.Module) -> list[list[str]]:
    """Parameter names of a `TimmImageTower` (relative to it) in lock groups, input to output."""
    trunk = tower.trunk
    by_id = group_parameters(trunk, trunk.group_matcher())
    groups = [[f"trunk.{n}" for n in names] for _, names in sorted(by_id.items())]
    head = [f"head.{n}" for n, _ in tower.head.named_parameters()]
    if getattr(tower, "family", None) != "vit":
        groups[-1].extend(head)  # TimmModel: its head trains with the trunk's last group
        return groups
    # Pooling norms and heads after the blocks (fc_norm of mean pooling, the MAP head), which timm's matcher
    # leaves to groups of their own, join the last block as its final norm does (open_clip's ln_post).
    last_block = len(tower.trunk.blocks)  # group 0 is the stem
    groups[last_block:] = [[n for g in groups[last_block:] for n in g]]
    return groups + ([head] if head else [])  # VisionTransformer.lock: `proj` is a group of its own


def text_groups(tower: nn.Module) -> list[list[str]]:
    """Parameter names of a `CLIPTextTower` in open_clip's `lock_text_tower` groups, input to output."""
    blocks = [
        [f"transformer.resblocks.{i}.{n}" for n, _ in b.named_parameters()]
        for i, b in enumerate(tower.transformer.resblocks)
    ]
    final_norm = [f"ln_final.{n}" for n, _ in tower.ln_final.named_parameters()]
    embeddings = [f"token_embedding.{n}" for n, _ in tower.token_embedding.named_parameters()]
    return [embeddings + ["positional_embedding"], *blocks[:-1], blocks[-1] + final_norm, ["text_projection"]]


def tower_groups(tower: nn.Module) -> list[list[str]] | None:
    """The lock groups of a cliplab tower (its `param_groups()`), or None for a tower that locks itself
    (`tower.lock`). Asked of the tower, not of its class: the towers import this module."""
    groups = getattr(tower, "param_groups", None)
    return groups() if callable(groups) else None


def group_count(tower: nn.Module) -> int:
    """How many lock groups the tower has (the most `unlocked_groups` can be)."""
    groups = tower_groups(tower)
    if groups is not None:
        return len(groups)
    # A tower with its own lock() (Hugging Face text): embeddings, each block, projection.
    return sum(isinstance(m, tower.block_classes()) for m in tower.modules()) + 2


def lock_tower(
    tower: nn.Module,
    unlocked_groups: int = 0,
    freeze_norm_stats: bool = False,
    freeze_layer_norm: bool = True,
) -> None:
    """Freeze all but the last `unlocked_groups` groups of `tower`.

    `freeze_norm_stats`: batch-norm layers of the locked part stay in eval mode (running statistics frozen;
    image towers). `freeze_layer_norm=False`: LayerNorm gains and biases of the locked part still train.
    """
    groups = tower_groups(tower)
    if groups is None:
        tower.lock(unlocked_groups=unlocked_groups, freeze_norm_stats=freeze_norm_stats)
    else:
        trainable = {n for g in groups[max(len(groups) - unlocked_groups, 0) :] for n in g}
        for name, param in tower.named_parameters():
            param.requires_grad_(name in trainable)
    if not freeze_layer_norm:
        for module in tower.modules():
            if isinstance(module, nn.LayerNorm):
                module.requires_grad_(True)
    if freeze_norm_stats and hasattr(tower, "_frozen_norms"):
        # batch norms whose parameters are all locked: TimmImageTower.train() keeps them in eval mode
        tower._frozen_norms = [
            m
            for m in tower.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and not any(p.requires_grad for p in m.parameters())
        ]
        tower.train(tower.training)


def lock_options(value, what: str, defaults: dict) -> dict | None:
    """`model.lock_image` / `model.lock_text` as plain options (None: unlocked), or one line saying what is wrong."""
    if value is None or value is False:
        return None
    if value is True:
        return dict(defaults)
    if not hasattr(value, "keys"):
        raise ConfigError(f"{what}={value!r} must be null or a mapping of {', '.join(defaults)}")
    unknown = sorted(set(value.keys()) - set(defaults))
    if unknown:
        raise ConfigError(f"{what} has unknown option(s) {unknown}; known: {', '.join(defaults)}")
    options = {**defaults, **dict(value)}
    for key, default in defaults.items():
        got = options[key]
        if isinstance(default, bool) and not isinstance(got, bool):
            raise ConfigError(f"{what}.{key}={got!r} must be true or false")
        if not isinstance(default, bool) and (
            isinstance(got, bool) or not isinstance(got, numbers.Integral) or got < 0
        ):
            raise ConfigError(f"{what}.{key}={got!r} must be a whole number >= 0 (0 locks the whole tower)")
    return options


def check_unlocked_count(tower: nn.Module, unlocked: int, key: str) -> None:
    """More groups left unlocked than the tower has is a mistake (a wrong tower or a typo): one line."""
    count = group_count(tower)
    if unlocked > count:
        raise ConfigError(
            f"{key}={unlocked} but the tower has {count} lock groups; use at most {count} (0 locks it all)"
        )


def lock_model(model: nn.Module, lock_image=None, lock_text=None) -> None:
    """Apply `model.lock_image` / `model.lock_text` to a CLIP's towers (`visual`, `text`)."""
    image = lock_options(lock_image, "model.lock_image", IMAGE_OPTIONS)
    if image is not None:
        check_unlocked_count(model.visual, image["unlocked_groups"], "model.lock_image.unlocked_groups")
        lock_tower(model.visual, image["unlocked_groups"], freeze_norm_stats=image["freeze_bn_stats"])
    text = lock_options(lock_text, "model.lock_text", TEXT_OPTIONS)
    if text is not None:
        check_unlocked_count(model.text, text["unlocked_layers"], "model.lock_text.unlocked_layers")
        lock_tower(model.text, text["unlocked_layers"], freeze_layer_norm=text["freeze_layer_norm"])

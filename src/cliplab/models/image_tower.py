"""Image towers built from timm models (CLIP ViTs, CLIP ResNets, any timm backbone).

Key layout (relative to the tower, i.e. under `visual.` in a CLIP), shared with open_clip's `TimmModel`:
`trunk.*` is the timm model; `head.pool.*` an optional attention pool added for backbones without one;
`head.proj.weight` (bias-free linear, like OpenAI's `visual.proj` transposed) or `head.mlp.fc{1,2}.*`.
The CLIP ResNets keep timm's own attention-pool head inside the trunk (`trunk.head.*`); it already
projects to `embed_dim` with a biased linear, exactly like OpenAI's `attnpool.c_proj`.
"""

import difflib
import logging
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import timm
import torch
from timm.layers import AttentionPool2d, Mlp
from timm.models._registry import model_entrypoint
from torch import nn

from cliplab.models.attention import choose_attention_kernels
from cliplab.models.interfaces import ImageTower
from cliplab.models.layers import PatchConv2d, QuickGELU
from cliplab.models.locking import image_groups, lock_tower
from cliplab.models.recompute import use_chunked_checkpointing, use_selective_recompute

log = logging.getLogger(__name__)

Pool = Literal["token", "avg", "attn"]
Proj = Literal["linear", "mlp", "none"]

# timm uses these names for its global pooling; "attn" means a different thing per family.
_VIT_POOL = {"token": "token", "avg": "avg", "attn": "map"}
_CNN_POOL = {"token": "token", "avg": "avg", "attn": ""}


def family(model_name: str) -> str:
    """The model family that decides how a tower is built, from the module that registers the timm model.

    "vit" (`vision_transformer`: CLIP ViTs and any timm ViT), "byob" (`byobnet`: the CLIP ResNets and other
    ByobNets) or "other" (any timm backbone: pooled features, then our head). Each has one builder
    (`_BUILDERS`); a new family is one more builder there.
    """
    if not timm.is_model(model_name.split(".")[0]):
        similar = difflib.get_close_matches(model_name, timm.list_models(), n=8, cutoff=0.6)
        raise ValueError(f"unknown timm model {model_name!r}; similar: {similar} (see timm.list_models())")
    module = model_entrypoint(model_name).__module__
    if module.endswith(".vision_transformer"):
        return "vit"
    if module.endswith(".byobnet"):
        return "byob"
    return "other"


@dataclass(frozen=True)
class _Request:
    """What a builder needs of the tower's arguments (the family-specific ones already checked)."""

    model_name: str
    embed_dim: int
    image_size: int | None
    pretrained: bool
    pool: Pool | None
    proj: Proj | None
    patch_dropout: float
    width: int | None
    layers: list[int] | None
    timm_kwargs: dict


class _Trunk(NamedTuple):
    """A builder's answer: the timm model, its feature width and the head to put on it."""

    model: nn.Module
    feat_width: int
    pool: Pool
    proj: Proj
    extra_attn_pool: bool  # our attention pool over the trunk's feature map (`head.pool`)


def _create(req: _Request, global_pool: str, num_classes: int = 0, **kwargs) -> nn.Module:
    return timm.create_model(
        req.model_name,
        pretrained=req.pretrained,
        num_classes=num_classes,
        global_pool=global_pool,
        **{**req.timm_kwargs, **kwargs},  # the builder's settings win, as a duplicate key would
    )


def _build_vit(req: _Request) -> _Trunk:
    """ViTs: timm pools (CLS token, mean or its MAP head); we project. Positional embeddings sized to the input."""
    kwargs = {} if req.image_size is None else {"img_size": req.image_size}
    if req.patch_dropout:
        kwargs["patch_drop_rate"] = req.patch_dropout
    if req.width is not None:
        kwargs["embed_dim"] = req.width  # timm's name for the transformer width
    pool, proj = req.pool or "token", req.proj or "linear"
    trunk = _create(req, _VIT_POOL[pool], **kwargs)
    embed = getattr(trunk, "patch_embed", None)
    if isinstance(getattr(embed, "proj", None), nn.Conv2d):
        embed.proj = PatchConv2d.replacing(embed.proj)  # the same weights; one matmul on the CPU
    return _Trunk(trunk, trunk.num_features, pool, proj, extra_attn_pool=False)


def _build_byob(req: _Request) -> _Trunk:
    """ByobNets; the CLIP ResNets keep their own attention-pool head, which projects to `embed_dim` itself."""
    kwargs = {} if req.image_size is None else {"img_size": req.image_size}
    if req.layers is not None:
        kwargs["blocks"] = _byob_blocks_with_depths(req.model_name, req.layers)
    if _byob_head_type(req.model_name) not in ("attn_abs", "attn_rot"):
        return _build_timm(req, **kwargs)  # a ByobNet without an attention head pools like any CNN
    if req.pool == "avg":
        raise ValueError(f"{req.model_name} pools by attention; use its '_gap' variant for average pooling")
    proj = req.proj or ("none" if req.pool in (None, "attn", "token") else "linear")
    # The model's own attention head projects to embed_dim when no further projection follows.
    head_projects = proj == "none"
    trunk = _create(req, "token", num_classes=req.embed_dim if head_projects else 0, **kwargs)
    feat_width = req.embed_dim if head_projects else trunk.head_hidden_size
    return _Trunk(trunk, feat_width, req.pool or "attn", proj, extra_attn_pool=False)


def _build_timm(req: _Request, **kwargs) -> _Trunk:
    """Any other timm backbone: its pooled features ("attn": our attention pool on its feature map)."""
    pool, proj = req.pool or "avg", req.proj or "linear"
    trunk = _create(req, _CNN_POOL[pool], **kwargs)
    return _Trunk(trunk, trunk.num_features, pool, proj, extra_attn_pool=pool == "attn")


_BUILDERS = {"vit": _build_vit, "byob": _build_byob, "other": _build_timm}


def _check_family_options(
    fam: str, model_name: str, patch_dropout, width, layers, chunks, channels_last
) -> None:
    """The options that only some families take."""
    if patch_dropout and fam != "vit":
        raise ValueError(f"patch_dropout needs a ViT, {model_name} is not one")
    if width is not None and fam != "vit":
        raise ValueError(f"`width` applies to ViTs; use width_factor for {model_name}")
    if layers is not None and fam != "byob":
        raise ValueError(f"`layers` applies to ByobNet models (e.g. resnet50_clip), not {model_name}")
    if chunks > 1 and fam != "vit":
        raise ValueError(f"checkpoint_chunks needs a ViT (per-sample blocks); {model_name} is not one")
    if channels_last and fam == "vit":
        raise ValueError(f"channels_last applies to convolutional towers; {model_name} is a ViT")


def _build_head(trunk: _Trunk, embed_dim: int, image_size: int | None) -> nn.Module:
    """`head.pool` (an attention pool, when asked for on a backbone without one), then `head.proj`/`head.mlp`."""
    head, width = nn.Module(), trunk.feat_width
    if trunk.extra_attn_pool:
        feat = _final_feature_size(trunk.model, image_size)
        # out_features=0: the pool keeps its width; the projection below maps to embed_dim.
        head.pool = AttentionPool2d(width, feat_size=feat, out_features=0, qkv_separate=True)
    if trunk.proj == "linear":
        head.proj = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(head.proj.weight, std=width**-0.5)
    elif trunk.proj == "mlp":
        head.mlp = Mlp(width, 2 * embed_dim, embed_dim)
    elif trunk.proj != "none":
        raise ValueError(f"unknown proj {trunk.proj!r}; choose linear, mlp or none")
    return head


class TimmImageTower(nn.Module, ImageTower):
    """`forward(images [B, 3, H, W]) -> [B, output_dim]` (not normalised).

    Args:
        model_name: any timm model name (e.g. `vit_base_patch32_clip_224`, `resnet50_clip`, `convnext_tiny`).
        embed_dim: output width (the joint embedding size).
        image_size: input resolution; ViTs and CLIP ResNets size their positional embeddings to it.
        pretrained: load timm's pretrained weights (needs the hub or timm's cache).
        checkpoint_path: a local file for the tower: OpenAI/open_clip `visual.*` layout, this tower's
            layout, or a bare timm state dict (loaded safely, see `cliplab.models.safe_load`).
        pool: "token" (CLS), "avg", "attn" (ViT: timm's MAP head; CNN: an attention pool), None = the
            model's own (CLS for ViTs, attention pool for CLIP ResNets, avg otherwise).
        proj: "linear" (bias-free), "mlp" (hidden 2 * embed_dim), "none"; None = "none" when the model's own
            head already projects (CLIP ResNets), else "linear".
        patch_dropout: FLIP patch dropout rate for ViTs (class token kept; active in training only).
        act: activation override ("quick_gelu" for OpenAI weights, "gelu").
        grad_checkpointing: start with activation checkpointing on.
        selective_recompute: ViTs recompute norms and GELUs in backward instead of storing them (about a
            third less activation memory, identical gradients; see `cliplab.models.recompute`).
        checkpoint_chunks: with `grad_checkpointing`, ViT blocks are recomputed over this many slices of the
            batch in turn, so a recomputed block's activations shrink by that factor (ViTs only: BatchNorm
            statistics would change with the slice).
        channels_last: keep convolutional towers' weights and inputs in NHWC (channels-last) memory order,
            which oneDNN (CPU) and cuDNN (tensor cores) convolve without reordering; same keys and values,
            only strides differ. Not for ViTs (one patch convolution, nothing to gain).
        layers: block count per stage for ByobNet models (e.g. `[1, 1, 1, 1]` for a tiny CLIP ResNet).
        width: transformer width of a ViT (timm's `embed_dim`, renamed because ours is the output size).
        **timm_kwargs: passed to `timm.create_model` (e.g. `depth`, `num_heads` for ViTs,
            `width_factor` for ByobNets).
    """

    def __init__(
        self,
        model_name: str,
        embed_dim: int,
        image_size: int | None = None,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        pool: Pool | None = None,
        proj: Proj | None = None,
        patch_dropout: float = 0.0,
        act: str | None = None,
        grad_checkpointing: bool = False,
        selective_recompute: bool = False,
        checkpoint_chunks: int = 1,
        channels_last: bool = False,
        layers: list[int] | None = None,
        width: int | None = None,
        **timm_kwargs,
    ):
        super().__init__()
        self.model_name = model_name
        self.image_size = image_size
        self.family = family(model_name)
        _check_family_options(
            self.family, model_name, patch_dropout, width, layers, checkpoint_chunks, channels_last
        )
        self.checkpoint_chunks, self.channels_last = checkpoint_chunks, channels_last
        if act is not None:
            # Ours for QuickGELU (fewer memory passes than timm's); same module name, no weights.
            timm_kwargs["act_layer"] = QuickGELU if act == "quick_gelu" else act
        # Extra timm.create_model arguments, kept for the open_clip export (its TimmModel passes none).
        self.timm_kwargs = dict(timm_kwargs)
        request = _Request(
            model_name=model_name,
            embed_dim=embed_dim,
            image_size=image_size,
            pretrained=pretrained,
            pool=pool,
            proj=proj,
            patch_dropout=patch_dropout,
            width=width,
            layers=layers,
            timm_kwargs=timm_kwargs,
        )
        trunk = _BUILDERS[self.family](request)
        self.pool, self.proj_type = trunk.pool, trunk.proj
        self.trunk = trunk.model
        self.head = _build_head(trunk, embed_dim, image_size)
        self.output_dim = embed_dim if trunk.proj != "none" else trunk.feat_width
        self._frozen_norms: list[nn.Module] = []

        if checkpoint_path is not None:
            from cliplab.models.interop.image_weights import load_image_tower_checkpoint

            load_image_tower_checkpoint(self, checkpoint_path)
        if channels_last:  # 4-D weights only; `.to(device)` and `to_empty` keep the strides
            self.to(memory_format=torch.channels_last)
        self.set_grad_checkpointing(grad_checkpointing)
        # Full checkpointing (timm's checkpoint_seq, or our chunked blocks) takes precedence.
        if self.family == "vit" and isinstance(getattr(self.trunk, "blocks", None), nn.Sequential):
            use_selective_recompute(self.trunk.blocks, selective_recompute)
        choose_attention_kernels(self.trunk)  # timm's explicit attention where it is the faster (CPU, short)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if hasattr(self.head, "pool"):
            x = self.head.pool(self.trunk.forward_features(images))
        else:
            x = self.trunk(images)
        if hasattr(self.head, "proj"):
            x = self.head.proj(x)
        elif hasattr(self.head, "mlp"):
            x = self.head.mlp(x)
        return x

    # ---- the tower contract -------------------------------------------------------------------------

    def param_groups(self) -> list[list[str]]:
        """Parameter names in lock groups from input to output, as open_clip groups them (`cliplab.models.locking`)."""
        return image_groups(self)

    def lock(self, unlocked_groups: int = 0, freeze_norm_stats: bool = False) -> None:
        """Freeze the tower (LiT) except its last `unlocked_groups` groups (`cliplab.models.locking`).

        `freeze_norm_stats` also keeps the batch-norm layers of the frozen part in eval mode (their running
        statistics stop updating) without changing the state-dict layout.
        """
        lock_tower(self, unlocked_groups, freeze_norm_stats=freeze_norm_stats)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in getattr(self, "_frozen_norms", []):
            module.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        chunked = enable and self.checkpoint_chunks > 1  # ours, in place of timm's checkpoint_seq
        self.trunk.set_grad_checkpointing(enable and not chunked)
        blocks = getattr(self.trunk, "blocks", None)
        if isinstance(blocks, nn.Sequential):  # chunks > 1 only for ViTs; 1 restores chunked blocks, if any
            use_chunked_checkpointing(blocks, self.checkpoint_chunks if chunked else 1)

    def no_weight_decay(self) -> set[str]:
        names = set()
        if hasattr(self.trunk, "no_weight_decay"):
            names |= {f"trunk.{n}" for n in self.trunk.no_weight_decay()}
        if hasattr(self.head, "pool"):
            names.add("head.pool.pos_embed")
        own_head = getattr(self.trunk, "head", None)
        if isinstance(own_head, AttentionPool2d):
            names.add("trunk.head.pos_embed")
        existing = {n for n, _ in self.named_parameters()}
        return names & existing  # timm lists tokens (dist_token, reg_token) the model may not have

    def block_classes(self) -> tuple[type, ...]:
        """Classes of the repeated blocks (ViT `blocks`, ByobNet/ConvNeXt `stages`, ResNet `layer1..4`)."""
        names = ("blocks", "stages", "layers")
        containers = [getattr(self.trunk, a) for a in names if hasattr(self.trunk, a)]
        containers += [m for n, m in self.trunk.named_children() if n.startswith("layer") and n[5:].isdigit()]
        classes: list[type] = []
        for container in containers:
            if not isinstance(container, nn.Sequential | nn.ModuleList):
                continue
            for child in container:
                # CNN stages hold a Sequential of blocks (or a stage module with `.blocks`); ViTs hold blocks.
                inner = getattr(child, "blocks", child)
                items = inner if isinstance(inner, nn.Sequential | nn.ModuleList) else [child]
                for block in items:
                    if type(block) not in classes:
                        classes.append(type(block))
        return tuple(classes)


def _byob_cfg(model_name: str):
    from timm.models.byobnet import model_cfgs

    return model_cfgs[model_name.split(".")[0]]


def _byob_head_type(model_name: str) -> str:
    return _byob_cfg(model_name).head_type


def _byob_blocks_with_depths(model_name: str, layers: list[int]):
    """The stage configs of a ByobNet with other depths (timm overlays `blocks` onto the model config)."""
    blocks = _byob_cfg(model_name).blocks
    if len(blocks) != len(layers):
        raise ValueError(f"{model_name} has {len(blocks)} stages, got layers={list(layers)}")
    return tuple(replace(b, d=int(d)) for b, d in zip(blocks, layers))


def _final_feature_size(trunk: nn.Module, image_size: int | None) -> int:
    size = image_size or trunk.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    reduction = trunk.feature_info[-1]["reduction"]
    return max(size // reduction, 1)

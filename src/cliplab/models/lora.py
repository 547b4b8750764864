"""LoRA adapters on the CLIP towers through peft, and their merge back into plain weights for export.

`lora` is plain config (`conf/lora/`): `towers` (image and/or text), `r`, `alpha`, `dropout`, `target_modules`
per tower (module-name suffixes; null: the tower family's default from `default_targets`) and `also_train`
(parameter-name prefixes of the CLIP model that train beside the adapters, e.g. `logit_scale`). Suffixes are
resolved here to the exact module names of the built model, so peft adapts exactly what was listed and a
suffix that names nothing stops at start-up (`cliplab.validate.check_lora`).
"""

from collections.abc import Mapping

from torch import nn

from cliplab.utils.errors import ConfigError

TOWER_ATTRS = {"image": "visual", "text": "text"}
# Module types peft's LoRA wraps.
ADAPTABLE = (nn.Linear, nn.Conv2d, nn.Embedding)


class LoraTargetError(ConfigError, ValueError):
    """A target suffix names no adaptable module of its tower (the message lists those it has): one line
    wherever it is raised (validation, or `configure_model` for a tower the meta device cannot build)."""


def enabled(lora: Mapping | None) -> bool:
    return bool(lora) and bool(lora.get("towers"))


def tower_family(model: nn.Module, tower: str) -> str:
    """The key of `default_targets` for a built tower: vit / byob / other (timm), clip_text / hf_text."""
    module = getattr(model, TOWER_ATTRS[tower])
    if tower == "image":
        return getattr(module, "family", "other")
    return "hf_text" if type(module).__name__ == "HFTextTower" else "clip_text"


def _matches(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def resolve_targets(model: nn.Module, lora: Mapping) -> dict[str, list[str]]:
    """`{tower: [full module names in the CLIP model]}` for every tower LoRA adapts."""
    resolved = {}
    for tower in lora["towers"]:
        if tower not in TOWER_ATTRS:
            raise LoraTargetError(f"lora.towers: unknown tower {tower!r}; choose from image, text")
        attr = TOWER_ATTRS[tower]
        suffixes = (lora.get("target_modules") or {}).get(tower)
        family = tower_family(model, tower)
        if suffixes is None:
            suffixes = (lora.get("default_targets") or {}).get(family)
        if not suffixes:
            raise LoraTargetError(
                f"lora.target_modules.{tower} is not set and lora.default_targets has no entry for the "
                f"{family} family: list module names, e.g. lora.target_modules.{tower}=[attn.qkv]"
            )
        modules = {
            name: module
            for name, module in getattr(model, attr).named_modules()
            if isinstance(module, ADAPTABLE)
        }
        names = []
        for suffix in suffixes:
            hits = [name for name in modules if _matches(name, suffix)]
            if not hits:
                leaves = sorted({".".join(p for p in n.split(".")[-2:] if not p.isdigit()) for n in modules})
                raise LoraTargetError(
                    f"lora.target_modules.{tower}: {suffix!r} matches no Linear/Conv2d/Embedding module of the "
                    f"{tower} tower ({family}); it has: {', '.join(leaves)}"
                )
            names += [f"{attr}.{hit}" for hit in hits if f"{attr}.{hit}" not in names]
        resolved[tower] = names
    return resolved


def add_lora(model: nn.Module, lora: Mapping) -> nn.Module:
    """Inject LoRA adapters in place; afterwards only adapters (and `also_train`) require gradients."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = [name for names in resolve_targets(model, lora).values() for name in names]
    config = LoraConfig(
        r=int(lora["r"]),
        lora_alpha=float(lora["alpha"]),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=targets,
        bias="none",
    )
    inject_adapter_in_model(config, model)
    also = tuple(lora.get("also_train") or ())
    for name, param in model.named_parameters():
        # peft names its adapter weights lora_A / lora_B (lora_embedding_A / _B for embeddings)
        trainable = ".lora_" in name or any(_matches_prefix(name, p) for p in also)
        param.requires_grad_(trainable)
    return model


def _matches_prefix(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain layer back, in place: the state-dict keys
    are then those of a model without LoRA (what `cliplab.models.interop` exports)."""
    from peft.tuners.lora import LoraLayer

    wrapped = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, module in wrapped:
        module.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    return model


def has_lora(model: nn.Module) -> bool:
    return any(".lora_" in name for name, _ in model.named_parameters())

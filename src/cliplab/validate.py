"""Cross-field rules checked before any heavy work; each failure is one line saying how to fix it."""

import importlib.util
import numbers

import torch
from omegaconf import DictConfig

from cliplab.utils.errors import ConfigError


def _choice(cfg: DictConfig, group: str, default: str) -> str:
    """The config-group option the user picked (`trainer=ddp` -> 'ddp'), for messages."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group, default)
    except ValueError:  # composed without @hydra.main (tests, notebooks)
        return default


def _strategy_target(cfg: DictConfig) -> str:
    strategy = cfg.trainer.get("strategy")
    if isinstance(strategy, str):
        return strategy
    return strategy.get("_target_", "") if strategy is not None else ""


def _not_with_deepspeed(cfg: DictConfig, setting: str, reason: str) -> None:
    """Stops `setting` (`ema=default`) under a DeepSpeed trainer with one line: the pair, `reason`."""
    if "DeepSpeed" in _strategy_target(cfg):
        raise ConfigError(f"{setting} with trainer={_choice(cfg, 'trainer', '?')}: {reason}")


def _real(value) -> bool:
    """A number, and not YAML's true/false (Python's bools are integers)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _whole(value) -> bool:
    """A whole number, and not YAML's true/false."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_types(cfg: DictConfig) -> None:
    """Overrides arrive as strings only when mistyped (`trainer.max_epochs=ten`): name the key."""
    rules = [
        ("trainer.max_epochs", numbers.Integral),
        ("trainer.max_steps", numbers.Integral),
        ("trainer.accumulate_grad_batches", numbers.Integral),
        ("data.batch_size", numbers.Integral),
        ("data.num_workers", numbers.Integral),
        ("optim.lr", numbers.Real),
        ("optim.weight_decay", numbers.Real),
        ("seed", numbers.Integral),
    ]
    for key, kind in rules:
        node, *path = key.split(".")
        value = cfg.get(node)
        for part in path:
            value = value.get(part) if isinstance(value, DictConfig) else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            expected = "an integer" if kind is numbers.Integral else "a number"
            raise ConfigError(
                f"{key}={value!r} must be {expected}, e.g. {key}={3 if expected[1] == 'n' else 1e-4}"
            )
    if cfg.data.get("batch_size", 1) <= 0:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} must be positive")


def deepspeed_handles_scalar_parameters() -> bool:
    """False for DeepSpeed releases (0.19.8) whose engine broadcasts every parameter as
    `p.data.view(torch.uint8)`, which raises on 0-dim ones such as `logit_scale`."""
    import inspect

    from deepspeed.runtime.engine import DeepSpeedEngine

    return "view(torch.uint8)" not in inspect.getsource(DeepSpeedEngine._broadcast_model)


def check_hardware(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    choice = _choice(cfg, "trainer", "the trainer")
    strategy = _strategy_target(cfg)
    wants_gpu = trainer.get("accelerator") in ("gpu", "cuda") or "DeepSpeed" in strategy
    if "DeepSpeed" in strategy and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            f"trainer={choice} needs DeepSpeed, which is not installed: `pip install --no-build-isolation 'deepspeed<0.19'` "
            "(make install does it), or pick trainer=fsdp"
        )
    if "DeepSpeed" in strategy and not deepspeed_handles_scalar_parameters():
        raise ConfigError(
            f"trainer={choice}: this DeepSpeed release broadcasts parameters as uint8 views and fails on the "
            "0-dim temperature; install `pip install --no-build-isolation 'deepspeed<0.19'`, or pick trainer=fsdp"
        )
    if wants_gpu and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer={choice} needs a CUDA GPU but none is visible here; use trainer=cpu, or trainer=ddp "
            "trainer.accelerator=cpu trainer.devices=2 for data parallel on CPU"
        )
    devices = trainer.get("devices")
    if wants_gpu and isinstance(devices, int) and devices > torch.cuda.device_count():
        raise ConfigError(
            f"trainer.devices={devices} but only {torch.cuda.device_count()} GPU(s) are visible; "
            f"set trainer.devices<={torch.cuda.device_count()}"
        )


def world_size(cfg: DictConfig) -> int | None:
    """Number of training processes, when the config fixes it."""
    devices, nodes = cfg.trainer.get("devices"), cfg.trainer.get("num_nodes", 1) or 1
    if isinstance(devices, int):
        return devices * nodes
    if isinstance(devices, (list, tuple)) or (hasattr(devices, "__len__") and not isinstance(devices, str)):
        return len(devices) * nodes
    if devices in ("auto", None) and cfg.trainer.get("accelerator") in ("gpu", "cuda"):
        return max(torch.cuda.device_count(), 1) * nodes
    if devices in ("auto", None):
        return nodes
    return None


def check_batch(cfg: DictConfig) -> None:
    size = world_size(cfg)
    batch = cfg.data.get("batch_size")
    if size and batch and batch % size:
        raise ConfigError(
            f"data.batch_size={batch} (the global batch) does not divide across {size} devices; "
            f"use a multiple of {size}, e.g. data.batch_size={(batch // size + 1) * size}"
        )


def _loss_class(cfg: DictConfig):
    """The class `cfg.loss` builds (its declared `contrastive` / `needs_logit_bias`), or None if unknown."""
    from hydra.utils import get_class

    target = cfg.loss.get("_target_")
    try:
        return get_class(str(target)) if target else None
    except Exception:  # not importable: instantiation reports it
        return None


def check_loss(cfg: DictConfig) -> None:
    from cliplab.losses.grad_cache import feature_cache_chunk

    loss_class = _loss_class(cfg)
    name = loss_class.__name__ if loss_class else str(cfg.loss.get("_target_", "")).rsplit(".", 1)[-1]
    chunk = feature_cache_chunk(cfg.get("accumulation"))  # a bad accumulation.mode / chunk_size: one line
    if chunk:
        _not_with_deepspeed(
            cfg,
            "accumulation=feature_cache",
            "DeepSpeed's engine runs the backward itself, not the chunked one; use trainer=ddp or trainer=fsdp, "
            "or accumulation=none",
        )
    accumulate = cfg.trainer.get("accumulate_grad_batches", 1) or 1
    if accumulate > 1 and getattr(loss_class, "contrastive", False):
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate} with {name}: plain gradient accumulation computes the "
            "contrastive loss per micro-batch, so each sample sees only its micro-batch as negatives (a different, "
            "weaker objective); use accumulation=feature_cache (feature-cache accumulation, exact; "
            "accumulation.chunk_size samples per tower pass) or a larger data.batch_size"
        )
    if getattr(loss_class, "needs_logit_bias", False) and cfg.model.get("init_logit_bias") is None:
        raise ConfigError(
            f"loss {name} needs a learned bias: set model.init_logit_bias=-10 (and model.init_logit_scale=2.3026, ln 10)"
        )


def check_towers(cfg: DictConfig) -> None:
    for tower in ("image_tower", "text_tower"):
        node = cfg.model.get(tower) or {}
        chunks = node.get("checkpoint_chunks", 1)
        key = f"model.{tower}.checkpoint_chunks"
        if not _whole(chunks) or chunks < 1:
            raise ConfigError(f"{key}={chunks!r} must be a positive integer (1: recompute whole batches)")
        if chunks > 1 and not node.get("grad_checkpointing"):
            raise ConfigError(
                f"{key}={chunks} slices the recomputation of activation checkpointing: "
                f"also set model.{tower}.grad_checkpointing=true"
            )
        if chunks > 1 and _shards_blocks(cfg):
            # Each slice would gather a sharded block's weights again; not built or tested.
            trainer = _choice(cfg, "trainer", "?")
            raise ConfigError(
                f"{key}={chunks} is not supported with sharded blocks (trainer={trainer}); use 1"
            )
    image = cfg.model.get("image_tower") or {}
    if image.get("channels_last") and _is_timm_vit(image.get("model_name")):
        raise ConfigError(
            f"model.image_tower.channels_last=true applies to convolutional towers; "
            f"{image.get('model_name')} is a ViT: set it to false"
        )
    check_patch_dropout(image)


def check_patch_dropout(image: DictConfig | dict) -> None:
    """FLIP patch dropout: a share in [0, 1) of the patch tokens, for timm ViT towers only."""
    rate = image.get("patch_dropout", 0.0)
    key = "model.image_tower.patch_dropout"
    if not _real(rate) or not 0 <= rate < 1:
        raise ConfigError(f"{key}={rate!r} must be a number in [0, 1), e.g. {key}=0.5 (half the patches)")
    model_name = image.get("model_name")
    if rate and not _is_timm_vit(model_name):
        raise ConfigError(
            f"{key}={rate} drops patch tokens, which only ViT towers have; {model_name} is not a ViT: set it to 0"
        )


def check_locks(cfg: DictConfig) -> None:
    """`model.lock_image` / `model.lock_text` (LiT): known options, and no more unlocked groups than the tower
    has (counted on the meta device: no weights, no memory)."""
    from cliplab.models import locking

    keys = (
        ("lock_image", "image_tower", "unlocked_groups", locking.IMAGE_OPTIONS),
        ("lock_text", "text_tower", "unlocked_layers", locking.TEXT_OPTIONS),
    )
    for lock_key, tower_key, count_key, defaults in keys:
        options = locking.lock_options(cfg.model.get(lock_key), f"model.{lock_key}", defaults)
        if options is None:
            continue
        tower = _meta_tower(cfg.model.get(tower_key))
        if tower is not None:
            locking.check_unlocked_count(tower, options[count_key], f"model.{lock_key}.{count_key}")


def _meta_tower(node):
    """The tower built on the meta device without weights, or None when that is not possible here (a tower
    that loads files, e.g. Hugging Face; an unknown name): the model's constructor checks it then."""
    from hydra.utils import instantiate

    target = str((node or {}).get("_target_", ""))
    if not target.endswith(("TimmImageTower", "CLIPTextTower")):
        return None
    overrides = {"pretrained": False, "checkpoint_path": None} if "Timm" in target else {}
    try:
        with torch.device("meta"):
            return instantiate(node, **overrides, _convert_="object")
    except Exception:  # a bad tower option: the tower's own error names it when the model is built
        return None


def check_tokenizer(cfg: DictConfig) -> None:
    """The tokenizer (`model.tokenizer`, beside the towers) must not make rows longer than the text tower
    takes: the first long caption would stop the run mid-training."""
    tokenizer, tower = cfg.model.get("tokenizer") or {}, cfg.model.get("text_tower") or {}
    length, limit = tokenizer.get("context_length"), tower.get("context_length")
    if isinstance(length, numbers.Integral) and isinstance(limit, numbers.Integral) and length > limit:
        raise ConfigError(
            f"model.tokenizer.context_length={length} is longer than model.text_tower.context_length={limit}; "
            f"set both with model.context_length, e.g. model.context_length={limit}"
        )


def check_hub_names(cfg: DictConfig) -> None:
    """Offline, a Hugging Face text tower named by hub id (the presets) needs a local folder instead."""
    from cliplab.models.hf_hub import check_reachable

    text = cfg.model.get("text_tower") or {}
    if not str(text.get("_target_", "")).endswith("HFTextTower"):
        return
    name = text.get("model_name_or_path")
    check_reachable("model.text_tower.model_name_or_path", name)  # tokenizer files, and weights or config
    # A tokenizer read from another folder than the encoder.
    node = cfg.model.get("tokenizer")
    source = node.get("name_or_path") if isinstance(node, DictConfig) else None
    if source is not None and source != name:
        check_reachable("model.tokenizer.name_or_path", source, "tokenizer_config.json")


def _is_timm_vit(model_name) -> bool:
    from cliplab.models.image_tower import family

    try:
        return isinstance(model_name, str) and family(model_name) == "vit"
    except ValueError:  # an unknown timm name: the tower reports it, with close matches
        return False


def _shards_blocks(cfg: DictConfig) -> bool:
    """FSDP (any) or DeepSpeed ZeRO-3: strategies that gather each block's parameters when it runs."""
    strategy, target = cfg.trainer.get("strategy"), _strategy_target(cfg).lower()
    stage = strategy.get("stage") if isinstance(strategy, DictConfig) else None
    return "fsdp" in target or "stage_3" in target or stage == 3


def _unknown_keys(node, allowed: set[str], where: str) -> None:
    unknown = sorted(set(node or {}) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]} is not an option; {where} takes {', '.join(sorted(allowed))}"
        )


def check_distill(cfg: DictConfig) -> None:
    """A teacher that exists, and a training step that runs it (the teacher's fit to the student's inputs is
    checked when it is loaded, still before the trainer starts: `cliplab.lit.teacher`)."""
    from pathlib import Path

    distill = cfg.get("distill")
    if not distill:
        return
    _unknown_keys(distill, {"teacher", "weight"}, "distill")
    _unknown_keys(distill.get("teacher"), {"ckpt_path", "model"}, "distill.teacher")
    path = (distill.get("teacher") or {}).get("ckpt_path")
    if not path:
        return
    if not Path(str(path)).exists():
        raise ConfigError(f"distill.teacher.ckpt_path={path} does not exist")
    name = distill.teacher.get("model")
    if isinstance(name, str):
        from cliplab.models.build import named_model_config

        named_model_config(name)  # a name that is no conf/model/ file stops here, in one line
    weight = distill.get("weight", 1.0)
    if not _real(weight) or weight < 0:
        raise ConfigError(f"distill.weight={weight!r} must be a number >= 0, e.g. distill.weight=1.0")
    if (cfg.get("accumulation") or {}).get("mode", "none") != "none":
        raise ConfigError(
            "distill=clip with accumulation=feature_cache: the chunked step does not run the teacher; "
            "use accumulation=none"
        )


def check_ema(cfg: DictConfig) -> None:
    ema = cfg.get("ema")
    if not ema:
        return
    _unknown_keys(ema, {"decay", "warmup"}, "ema")
    decay = ema.get("decay")
    if not _real(decay) or not 0 <= decay < 1:
        raise ConfigError(f"ema.decay={decay!r} must be a number in [0, 1), e.g. ema.decay=0.9999")
    _not_with_deepspeed(
        cfg,
        "ema=default",
        "DeepSpeed's engine partitions and owns the weights; use trainer=ddp or trainer=fsdp, or ema=none",
    )


def check_lora(cfg: DictConfig) -> None:
    """LoRA settings, and every target module suffix present in its tower (the model built on the meta device)."""
    from omegaconf import OmegaConf

    from cliplab.models.lora import LoraTargetError, enabled, resolve_targets

    lora = cfg.get("lora")
    if not enabled(lora):
        return
    r, alpha, dropout = lora.get("r"), lora.get("alpha"), lora.get("dropout", 0.0)
    if not _whole(r) or r < 1:
        raise ConfigError(f"lora.r={r!r} must be a positive integer (the adapter rank), e.g. lora.r=8")
    if not _real(alpha) or alpha <= 0:
        raise ConfigError(f"lora.alpha={alpha!r} must be a positive number, e.g. lora.alpha=16")
    if not _real(dropout) or not 0 <= dropout < 1:
        raise ConfigError(f"lora.dropout={dropout!r} must be in [0, 1)")
    _not_with_deepspeed(
        cfg, "lora", "LoRA is built and tested with DDP and FSDP2 only; use trainer=ddp or trainer=fsdp"
    )
    from cliplab.models.build import build_clip

    try:
        with torch.device("meta"):  # no memory, no init compute: just the module names
            model = build_clip(cfg.model)
    except Exception:  # e.g. a tower that reads weights from disk: configure_model checks the targets then
        return
    try:
        resolve_targets(model, OmegaConf.to_container(lora, resolve=True))
    except LoraTargetError as err:
        raise ConfigError(str(err)) from None


def check_finetune(cfg: DictConfig) -> None:
    """`src/finetune.py`'s settings (conf/finetune.yaml), before the model is loaded."""
    check_missing(cfg)
    ft = cfg.finetune
    for key in ("steps", "batch_size"):
        value = ft.get(key)
        if not _whole(value) or value < 1:
            raise ConfigError(f"finetune.{key}={value!r} must be a positive integer, e.g. finetune.{key}=100")
    if not _real(ft.lr) or ft.lr <= 0:
        raise ConfigError(f"finetune.lr={ft.lr!r} must be a positive number, e.g. finetune.lr=1e-5")
    if ft.get("precision") not in ("bf16", "fp16", "fp32"):
        raise ConfigError(f"finetune.precision={ft.get('precision')!r} must be one of bf16, fp16, fp32")
    alphas = list(cfg.get("alphas") or [])
    bad = [a for a in alphas if not _real(a) or not 0 <= a <= 1]
    if not alphas or bad:
        raise ConfigError(
            f"alphas={alphas} must be numbers in [0, 1] (0: zero-shot weights, 1: fine-tuned), e.g. alphas=[0,0.5,1]"
        )
    if ft.get("test") is None and not 0 < (ft.get("holdout") or 0) < 1:
        raise ConfigError(
            f"finetune.holdout={ft.get('holdout')} must be in (0, 1) when finetune.test is null (the share of "
            "finetune.data held out for testing), e.g. finetune.holdout=0.2"
        )


def check_missing(cfg: DictConfig) -> None:
    """A `???` value not given yet: name the key with an example command (before anything reads it)."""
    from cliplab.utils.missing import missing_keys, missing_message

    missing = missing_keys(cfg)
    if missing:
        raise ConfigError(missing_message(missing[0]))


def check_augment(cfg: DictConfig) -> None:
    """The drawing-augmentation switches of `data.train_transform`, checked before anything is built."""
    from cliplab.data.augment import DrawingAugment

    transform = cfg.data.get("train_transform") if isinstance(cfg.get("data"), DictConfig) else None
    if isinstance(transform, DictConfig):
        switches = DrawingAugment.switches()
        DrawingAugment(**{k: transform[k] for k in switches if transform.get(k) is not None})


def validate(cfg: DictConfig) -> None:
    """All rules that need no data and no model; raises ConfigError with the first problem found."""
    check_missing(cfg)
    check_types(cfg)
    check_towers(cfg)
    check_locks(cfg)
    check_tokenizer(cfg)
    check_hub_names(cfg)
    check_loss(cfg)
    check_distill(cfg)
    check_ema(cfg)
    check_lora(cfg)
    check_batch(cfg)
    check_augment(cfg)
    check_hardware(cfg)

"""`ckpt_path=` of a training run: resolved, checked to run no code, and checked to fit the strategy."""

from omegaconf import DictConfig

from cliplab.checkpoints.find import resolve_ckpt_path
from cliplab.checkpoints.load import check_safe
from cliplab.utils.errors import ConfigError

# Sharded folders resume only under the strategy that wrote them (each rank reads its own shards).
_FOLDER_STRATEGIES = {"dcp": ("FSDP2", "ModelParallel"), "deepspeed": ("DeepSpeed",)}
_FOLDER_TRAINERS = {"dcp": "trainer=fsdp", "deepspeed": "trainer=deepspeed"}


def _strategy_target(cfg: DictConfig) -> str:
    strategy = cfg.trainer.get("strategy")
    if isinstance(strategy, str) or strategy is None:
        return str(strategy or "")
    return str(strategy.get("_target_", ""))


def resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from (None: start fresh); raises a one-line `CliplabError` otherwise."""
    path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
    if path is None:
        return None
    kind = check_safe(path, allow_unsafe_pickle=cfg.get("allow_unsafe_pickle", False))
    if kind in _FOLDER_STRATEGIES and not any(
        name in _strategy_target(cfg) for name in _FOLDER_STRATEGIES[kind]
    ):
        raise ConfigError(
            f"ckpt_path={path} is a sharded {'FSDP2' if kind == 'dcp' else 'DeepSpeed'} checkpoint folder: resume "
            f"it with {_FOLDER_TRAINERS[kind]} (evaluate it with src/eval.py ckpt_path=..., which consolidates it)"
        )
    return path

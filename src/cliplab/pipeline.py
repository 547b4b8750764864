"""train(cfg): validate, instantiate, fit, evaluate, report. The entry points only call this."""

import json
import logging
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cliplab.checkpoints.resume import resume_path
from cliplab.data.shard_lists import NoShardsError
from cliplab.lit.module import CLIPModule
from cliplab.sweeps.jobs import start_job
from cliplab.utils.errors import CliplabError, ConfigError, DataError
from cliplab.utils.host_memory import keep_freed_memory
from cliplab.utils.host_precision import auto_precision
from cliplab.utils.results import final_results, write_results
from cliplab.utils.wandb_mode import ensure_wandb_mode, finish_wandb
from cliplab.validate import validate

log = logging.getLogger("cliplab")


def instantiate_group(group: DictConfig | None) -> list:
    """Every `_target_` entry of a group such as `callbacks` or `logger` (entries may be null)."""
    if not group:
        return []
    # plain containers, not DictConfigs, reach the objects (W&B cannot serialise a DictConfig `config`)
    return [
        instantiate(node, _convert_="all")
        for node in group.values()
        if isinstance(node, DictConfig) and "_target_" in node
    ]


# The built-in data sets and the command that builds each into the cache.
BUILD_COMMANDS = {
    "mix_dir": "python -m cliplab.data.mix",
    "emoji_dir": "make data",
}


def check_data(datamodule: pl.LightningDataModule, paths: DictConfig) -> None:
    """Missing or empty shard patterns stop here, before any model is built."""
    for split in ("train", "val"):
        source = getattr(datamodule, f"{split}_source", None)
        if not hasattr(source, "shard_lists"):
            continue
        try:
            source.shard_lists(f"data.{split}.urls")
        except NoShardsError as err:
            built = [cmd for key, cmd in BUILD_COMMANDS.items() if str(paths[key]) in str(source.urls)]
            hint = f"; build this built-in data set first with `{built[0]}`" if built else ""
            raise DataError(f"{err}{hint}") from None


def build_datamodule(cfg: DictConfig, tokenizer) -> pl.LightningDataModule:
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    check_data(datamodule, cfg.paths)
    return datamodule


def build_module(cfg: DictConfig) -> CLIPModule:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return CLIPModule(
        model=resolved["model"],
        loss=resolved["loss"],
        optim=resolved["optim"],
        scheduler=resolved.get("scheduler"),
        compile=cfg.get("compile", False),
        config=resolved,
        accumulation=resolved.get("accumulation"),
        distill=resolved.get("distill") or None,
        ema=resolved.get("ema") or None,
        lora=resolved.get("lora"),
    )


def load_pretrained(module: CLIPModule, cfg: DictConfig) -> None:
    """`pretrained=FILE`: start from OpenAI / open_clip / cliplab weights (not when resuming a run)."""
    if not cfg.get("pretrained") or cfg.get("ckpt_path"):
        return
    from cliplab.models.interop import load_openclip_checkpoint

    if not Path(cfg.pretrained).is_file():
        raise ConfigError(f"pretrained={cfg.pretrained} is not a file")
    module.build_model()  # the plain model: LoRA adapters (if any) are added on top by configure_model
    unsafe = cfg.get("allow_unsafe_pickle", False)
    try:
        load_openclip_checkpoint(module.model, cfg.pretrained, allow_unsafe_pickle=unsafe)
    except CliplabError:
        raise
    except (ValueError, KeyError, RuntimeError) as err:  # layout conversion failures: one line
        message = " ".join(str(err).split())
        raise ConfigError(f"pretrained={cfg.pretrained} does not fit this model: {message}") from None


def load_distill_teacher(module: CLIPModule, cfg: DictConfig) -> None:
    """`distill=clip`: the frozen teacher, read and checked against the student before the trainer starts."""
    from cliplab.checkpoints.teacher import load_teacher
    from cliplab.lit.teacher import distill_enabled

    if distill_enabled(module.hparams.distill):
        unsafe = cfg.get("allow_unsafe_pickle", False)
        module.teacher = load_teacher(module.hparams.distill, module.hparams.model, unsafe)


def build_callbacks(cfg: DictConfig) -> list:
    callbacks = instantiate_group(cfg.get("callbacks"))
    if cfg.get("evals"):  # every `evals` entry, on its own schedule (conf/evals/, docs/contracts.md)
        from cliplab.callbacks.evals import EvalsCallback

        callbacks.append(EvalsCallback(cfg.evals))
    return callbacks


def save_config(cfg: DictConfig, output_dir: Path) -> None:
    """The fully resolved config, next to the checkpoints (rank 0 only)."""
    if pl.utilities.rank_zero_only.rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)


def train(cfg: DictConfig) -> dict:
    """Trains (and evaluates) one run; returns the final metrics."""
    validate(cfg)
    # Sweeps (cliplab.sweeps.jobs): in a multirun, a finished job returns its saved metrics instead of
    # retraining, and an interrupted one resumes from its newest checkpoint; also names the job's W&B run.
    job = start_job(cfg)
    if job.finished is not None:
        return job.finished
    cfg = job.cfg
    # `last`, a run directory or a checkpoint: resolved, and refused (one line) if loading could run code
    cfg.ckpt_path = resume_path(cfg)
    # The module owns the run's one tokenizer (built from model.tokenizer); the data module tokenizes with it.
    # Building the module builds no tower yet (configure_model does), so seeding after it changes nothing.
    module = build_module(cfg)
    if cfg.get("keep_freed_host_memory", True):
        keep_freed_memory()  # before the data workers fork: they inherit it
    datamodule = build_datamodule(cfg, module.tokenizer)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    ensure_wandb_mode()
    load_pretrained(module, cfg)
    load_distill_teacher(module, cfg)
    loggers = instantiate_group(cfg.get("logger"))
    if cfg.trainer.get("precision") == "auto":  # resolved here, so the saved config says what ran
        cfg.trainer.precision, reason = auto_precision(str(cfg.trainer.get("accelerator", "auto")))
        log.info("trainer.precision=auto: %s (%s)", cfg.trainer.precision, reason)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=build_callbacks(cfg), logger=loggers or False)

    output_dir = Path(cfg.paths.output_dir)
    save_config(cfg, output_dir)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    try:
        weights_only = not cfg.get("allow_unsafe_pickle", False)
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=weights_only)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test") and trainer.is_global_zero:
            results = final_results(trainer, metrics)
            write_results(results, output_dir, trainer)
            metrics["results"] = results
        if trainer.is_global_zero:
            (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        return metrics
    finally:
        finish_wandb()

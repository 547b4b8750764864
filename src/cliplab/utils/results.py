"""The end-of-training results table: each evaluation metric beside its chance level, and what produced it.

The layout (results.json, results.md) is cliplab.eval.report's, shared with `src/eval.py`.
"""

from pathlib import Path

import pytorch_lightning as pl

from cliplab.eval import report

# the validation-pass retrieval (callbacks.retrieval) and zero-shot, and ema/: the same metrics for the
# averaged weights; EvalsCallback adds its entries' prefixes
EVAL_PREFIXES = ("zeroshot/", "retrieval/", "ema/")


def final_results(trainer: pl.Trainer, metrics: dict[str, float]) -> list[dict]:
    """Rows {metric, value, chance} for every evaluation metric the callbacks logged."""
    chance: dict[str, float] = {}
    prefixes = set(EVAL_PREFIXES)
    for callback in trainer.callbacks:
        if hasattr(callback, "chance_levels"):
            chance.update(callback.chance_levels())
        if hasattr(callback, "metric_prefixes"):
            prefixes.update(callback.metric_prefixes())
    chance.update({f"ema/{name}": level for name, level in chance.items()})  # guessing is guessing
    return report.result_rows(metrics, chance, sorted(prefixes))


def training_provenance(trainer: pl.Trainer, output_dir: Path) -> dict:
    """The run, its final step and weights hash, and each evals entry's own record."""
    from cliplab.eval.provenance import weights_sha256

    module = trainer.lightning_module
    produced = {
        "model": f"training run {output_dir}",
        "global_step": trainer.global_step,
        "weights_sha256": weights_sha256(module.model),
        "evals": {},
    }
    for callback in trainer.callbacks:
        if hasattr(callback, "provenance"):
            produced["evals"].update(callback.provenance())
    return produced


def picture_data(trainer: pl.Trainer) -> dict[str, dict]:
    """What the evaluation callbacks kept for the pictures, by entry name (cliplab.eval.pictures.write)."""
    outputs: dict[str, dict] = {}
    for callback in trainer.callbacks:
        if hasattr(callback, "picture_data"):
            outputs.update(callback.picture_data())
    return outputs


def write_results(rows: list[dict], output_dir: Path, trainer: pl.Trainer | None = None) -> None:
    """Prints the table and writes results.json, results.md and the pictures into the run directory; the
    pictures go to the W&B run too (as images and tables) when a WandbLogger is logging."""
    from cliplab.eval.pictures.write import log_pictures, write_pictures

    produced_by = training_provenance(trainer, output_dir) if trainer is not None else None
    pictures = write_pictures(picture_data(trainer), output_dir) if trainer is not None else []
    report.write_results(rows, output_dir, produced_by, pictures)
    if pictures:
        log_pictures(pictures, trainer.loggers)

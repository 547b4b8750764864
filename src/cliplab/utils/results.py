"""The end-of-run results table: each evaluation metric beside its chance level."""

import json
from pathlib import Path

import pytorch_lightning as pl
from rich.console import Console
from rich.table import Table

EVAL_PREFIXES = ("zeroshot/", "retrieval/", "ema/")  # ema/: the same metrics for the averaged weights


def final_results(trainer: pl.Trainer, metrics: dict[str, float]) -> list[dict]:
    """Rows {metric, value, chance} for every evaluation metric the callbacks logged."""
    chance: dict[str, float] = {}
    for callback in trainer.callbacks:
        if hasattr(callback, "chance_levels"):
            chance.update(callback.chance_levels())
    return [
        {"metric": name, "value": value, "chance": chance.get(name.removeprefix("ema/"))}
        for name, value in sorted(metrics.items())
        if name.startswith(EVAL_PREFIXES)
    ]


def results_markdown(rows: list[dict]) -> str:
    lines = ["| metric | value | chance |", "|---|---:|---:|"]
    for row in rows:
        chance = "" if row["chance"] is None else f"{row['chance']:.4f}"
        lines.append(f"| {row['metric']} | {row['value']:.4f} | {chance} |")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], output_dir: Path) -> None:
    """Prints the table and writes results.json and results.md into the run directory."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(rows, indent=2))
    (output_dir / "results.md").write_text(results_markdown(rows))
    table = Table(title=f"Held-out results ({output_dir})")
    for column in ("metric", "value", "chance"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in rows:
        chance = "" if row["chance"] is None else f"{row['chance']:.4f}"
        table.add_row(row["metric"], f"{row['value']:.4f}", chance)
    Console().print(table)

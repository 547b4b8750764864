"""The one evaluator interface, the schedule of an `evals` entry, and building entries from config.

An `evals` entry (conf/evals/<name>.yaml) is the evaluator's `_target_` and arguments plus two keys the
scheduler reads: `prefix` (metrics are logged as `<prefix>/<metric>`) and `schedule`. The training callback
(cliplab.callbacks.evals) and `src/eval.py` (cliplab.eval.run) run the same entries.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from torch import nn

from cliplab.utils.errors import CliplabError, ConfigError


@dataclass(frozen=True)
class EvalContext:
    """What every evaluator is handed besides the model: the tokenizer, the image transform, the ranks."""

    tokenizer: Any
    transform: Any  # cliplab.data.transforms.ClipImageTransform of the model's image size
    rank: int = 0
    world_size: int = 1


@runtime_checkable
class Evaluator(Protocol):
    """Every rank calls `run` (evaluators may use collectives) and gets the same metrics back."""

    def run(self, model: nn.Module, context: EvalContext) -> dict[str, float]:
        """Metrics by name (without the entry's prefix)."""

    def chance_levels(self) -> dict[str, float]:
        """What guessing scores on each metric `run` returns (known once `run` has loaded the data)."""

    def provenance(self) -> dict:
        """What produced the numbers: data version, prompts and templates, preprocessing, sizes."""


@dataclass(frozen=True)
class Schedule:
    """When training runs an entry: every N epochs (at validation end), every N optimizer steps, and/or once
    when training ends (skipped if it already ran at the final step)."""

    every_n_epochs: int | None = None
    every_n_steps: int | None = None
    at_end: bool = True

    def due_at_epoch(self, epoch: int) -> bool:
        return bool(self.every_n_epochs) and (epoch + 1) % self.every_n_epochs == 0

    def due_at_step(self, step: int) -> bool:
        return bool(self.every_n_steps) and step > 0 and step % self.every_n_steps == 0


@dataclass
class EvalEntry:
    name: str
    prefix: str
    schedule: Schedule
    evaluator: Evaluator
    last_step: int | None = field(default=None, compare=False)  # the global step it last ran at

    def key(self, metric: str) -> str:
        return f"{self.prefix}/{metric}"


SCHEDULER_KEYS = ("prefix", "schedule")


def build_entry(name: str, node: Mapping) -> EvalEntry:
    """One config entry -> EvalEntry (`prefix` and `schedule` are the scheduler's; the rest builds the
    evaluator)."""
    if isinstance(node, DictConfig):  # resolved where it sits, so `${paths...}` still finds the root
        try:
            node = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as err:  # `???`: named from the top, with an example command
            from cliplab.utils.missing import missing_message

            key = err.full_key if err.full_key.startswith("evals.") else f"evals.{name}.{err.full_key}"
            raise ConfigError(missing_message(key)) from None
    node = dict(node)
    if "_target_" not in node:
        raise ConfigError(f"evals.{name} has no _target_ (the evaluator class)")
    prefix = str(node.pop("prefix", None) or name).rstrip("/")
    schedule = dict(node.pop("schedule", None) or {})
    unknown = set(schedule) - {"every_n_epochs", "every_n_steps", "at_end"}
    if unknown:
        raise ConfigError(
            f"evals.{name}.schedule: unknown keys {sorted(unknown)} (every_n_epochs, every_n_steps, at_end)"
        )
    try:
        evaluator = instantiate(node, _convert_="all")
    except InstantiationException as err:  # Hydra wraps it: a user error keeps its one line
        cause = err.__cause__
        while cause is not None and not isinstance(cause, CliplabError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
    if not isinstance(evaluator, Evaluator):
        raise ConfigError(f"evals.{name}: {node['_target_']} has no run / chance_levels / provenance")
    return EvalEntry(name, prefix, Schedule(**schedule), evaluator)


def build_entries(evals: Mapping | None) -> list[EvalEntry]:
    """Every `_target_` entry of the `evals` group, in config order (null entries are switched off)."""
    if not evals:
        return []
    entries = [build_entry(name, node) for name, node in evals.items() if node is not None]
    prefixes = [e.prefix for e in entries]
    clashes = sorted({p for p in prefixes if prefixes.count(p) > 1})
    if clashes:
        raise ConfigError(f"evals: several entries log under the prefix {clashes}: give each its own prefix")
    return entries

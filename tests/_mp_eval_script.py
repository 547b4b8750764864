"""Runs the evaluation callbacks under 2-process DDP or FSDP2 (gloo, CPU); run it under torchrun.

`python -m torch.distributed.run --nproc_per_node 2 tests/_mp_eval_script.py <benchmark_dir> <out_dir>
<pairs.csv> [ddp|fsdp]`

A frozen random tiny CLIP (built from `eval_model()`, the same weights in every process and in the test) is
fitted for one epoch with learning rate 0, so the EvalsCallback (every evaluator kind: `eval_entries()`) and
the validation RetrievalCallback run on both ranks, each on its share of the images. Rank 0 writes `<out_dir>/result.json` with the logged metrics and both
ranks' numbers of evaluated retrieval images, so the test can compare with a one-process evaluation.
"""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from _mp_common import WORLD, strategy
from _mp_train_script import CONTEXT, EMBED, IMAGE_SIZE, VOCAB
from _mp_train_script import MODEL as TRAIN_MODEL
from _tiny import quiet_trainer
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Subset, TensorDataset

from cliplab.callbacks.evals import EvalsCallback
from cliplab.callbacks.retrieval import RetrievalCallback
from cliplab.data.table_source import TableSource
from cliplab.eval.benchmarks import ImageFolderBenchmark
from cliplab.eval.evaluator import EvalEntry, Schedule
from cliplab.eval.evaluators.probe import KShotProbe, LinearProbe
from cliplab.eval.evaluators.retrieval import PairedRetrieval
from cliplab.eval.evaluators.zeroshot import ZeroShotClassification

RETRIEVAL_PAIRS = 23  # odd, and not a multiple of the batch: the ranks get different numbers of pairs
TEMPLATES = ["a photo of a {}.", "{}"]
# The training scripts' tiny CLIP, with the towers' default activations and the default temperature.
MODEL = {
    "_target_": TRAIN_MODEL["_target_"],
    "embed_dim": EMBED,
    "image_tower": {k: v for k, v in TRAIN_MODEL["image_tower"].items() if k != "act"},
    "text_tower": {k: v for k, v in TRAIN_MODEL["text_tower"].items() if k != "act"},
}


def eval_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return instantiate(MODEL).eval()


def tokenizer(prompts: list[str]) -> torch.Tensor:
    """Deterministic toy tokenizer: a character hash per position, the largest id (EOT) after the text."""
    out = torch.zeros(len(prompts), CONTEXT, dtype=torch.long)
    for row, text in enumerate(prompts):
        ids = [1 + (ord(c) * 31 + i) % (VOCAB - 2) for i, c in enumerate(text[: CONTEXT - 1])]
        out[row, : len(ids)] = torch.tensor(ids)
        out[row, len(ids)] = VOCAB - 1
    return out


def eval_entries(bench_dir: Path, pairs_csv: Path) -> list[EvalEntry]:
    """One entry of each evaluator kind, on the test's noise folder and pairs table, at every epoch."""
    every_epoch = Schedule(every_n_epochs=1)
    grid = {"low": -1, "high": 1, "steps": 3}
    evaluators = {
        "zeroshot/folder": ZeroShotClassification(ImageFolderBenchmark("folder", bench_dir, TEMPLATES), 4),
        "retrieval/pairs": PairedRetrieval(TableSource(pairs_csv), batch_size=3),
        "linear_probe/folder": LinearProbe(bench_dir, c_grid=grid, batch_size=4),
        "kshot/folder": KShotProbe(bench_dir, shots=(1, 2), seeds=2, c_grid=grid, batch_size=4),
    }
    return [EvalEntry(p.split("/")[0], p, every_epoch, e) for p, e in evaluators.items()]


def retrieval_pairs() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(RETRIEVAL_PAIRS, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    tokens = torch.randint(1, VOCAB - 1, (RETRIEVAL_PAIRS, CONTEXT), generator=g)
    tokens[:, -1] = VOCAB - 1
    return TensorDataset(images, tokens)


class Frozen(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = eval_model().requires_grad_(False)
        self.idle = torch.nn.Parameter(torch.zeros(()))  # the one thing the loss depends on
        self.tokenizer = tokenizer
        self.hparams["model"] = {"image_size": IMAGE_SIZE}

    def configure_model(self):
        if self.device_mesh is not None:  # FSDP2 (ModelParallelStrategy): every forward all-gathers
            from cliplab.lit.sharding import shard_model

            shard_model(self.model, self.device_mesh)

    def training_step(self, batch, batch_idx):
        return self.idle * 0.0  # nothing trains (an FSDP2 backward through the model would reduce DTensors)

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD([self.idle], lr=0.0)


class SplitData(pl.LightningDataModule):
    """Rank r validates on pairs [r * 12, (r + 1) * 12): 12 and 11 pairs, so the gather must handle both."""

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=1)

    def val_dataloader(self):
        rank = self.trainer.global_rank
        part = Subset(retrieval_pairs(), range(rank * 12, min((rank + 1) * 12, RETRIEVAL_PAIRS)))
        return DataLoader(part, batch_size=5)


def main() -> None:
    bench_dir, out, pairs_csv = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    name = sys.argv[4] if len(sys.argv) > 4 else "ddp"
    torch.set_num_threads(1)
    evals = EvalsCallback(eval_entries(bench_dir, pairs_csv))
    retrieval = RetrievalCallback("val")
    trainer = quiet_trainer(
        devices=WORLD,
        strategy=strategy(name),
        max_epochs=1,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # SplitData gives each rank its own slice
        callbacks=[evals, retrieval],
    )
    trainer.fit(Frozen(), datamodule=SplitData())
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps({"metrics": metrics, "gallery": retrieval.gallery_sizes}))


if __name__ == "__main__":
    main()

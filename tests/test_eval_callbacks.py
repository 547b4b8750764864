"""The validation-pass retrieval callback logs recall through pl_module.log under the agreed names (the evals
registry's callback: tests/test_evals_callback.py)."""

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from cliplab.callbacks.retrieval import RetrievalCallback
from tests.test_eval_cli import ColourModel, colour_tokenizer


class TinyModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = ColourModel()
        self.tokenizer = colour_tokenizer

    def training_step(self, batch, batch_idx):
        return (self.model.w**2).sum() * 0.0 + batch[0].sum() * 0.0 + self.model.w.sum() * 0.0

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _loader(n=8):
    images = torch.rand(n, 3, 16, 16)
    tokens = torch.tensor([[i % 3, 0] for i in range(n)])
    return DataLoader(TensorDataset(images, tokens), batch_size=4)


def _trainer(callback, **kw):
    quiet = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    return pl.Trainer(max_epochs=2, callbacks=[callback], num_sanity_val_steps=0, **quiet, **kw)


def test_retrieval_callback_logs_recall():
    callback = RetrievalCallback(name="val")
    trainer = _trainer(callback)
    trainer.fit(TinyModule(), train_dataloaders=_loader(), val_dataloaders=_loader())
    assert {"retrieval/val/image_to_text_R@1", "retrieval/val/text_to_image_R@10"} <= set(
        trainer.callback_metrics
    )
    assert float(trainer.callback_metrics["retrieval/val/text_to_image_R@10"]) == 1.0  # gallery of 8 < 10

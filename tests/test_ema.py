"""EMA of the weights (`conf/ema/`): torch's AveragedModel as the oracle of the update, every optimizer step
of a real fit averaged, saved in the checkpoint and resumed exactly, evaluated beside the live weights."""

import pytest
import pytorch_lightning as pl
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cliplab.checkpoints.load import load_module
from cliplab.lit.ema import EmaWeights
from cliplab.lit.module import CLIPModule
from cliplab.utils.errors import ConfigError
from cliplab.validate import validate
from tests._mp_train_script import LOSS, MODEL, OPTIM, Data
from tests._tiny import quiet_trainer


def _reference(sequence: list[dict], decay: float, warmup: bool) -> dict:
    """The average of a sequence of live state dicts, written out from the documented rule."""
    average = None
    for t, weights in enumerate(sequence):
        d = 0.0 if t == 0 else (min(decay, (1 + t) / (10 + t)) if warmup else decay)
        average = {
            k: v.clone() if average is None else d * average[k] + (1 - d) * v for k, v in weights.items()
        }
    return average


def _averaged(module: CLIPModule) -> dict:
    return {k: v.detach().clone() for k, v in module.ema.weights.state_dict().items()}


def test_update_equals_torch_averaged_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    ema = EmaWeights(model, decay=0.8, warmup=False)
    oracle = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.8))
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model)
        oracle.update_parameters(model)
    for name, value in oracle.module.named_parameters():
        torch.testing.assert_close(ema.weights.get_parameter(name), value, rtol=0, atol=0)
    assert int(ema.num_updates) == 5 and not any(p.requires_grad for p in ema.parameters())


class _LiveWeights(pl.Callback):
    """The live weights after every optimizer step, and the average as restored when training starts."""

    def __init__(self):
        self.sequence, self.at_start = [], None

    def on_train_start(self, trainer, module):
        self.at_start = _averaged(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.sequence.append({k: v.detach().clone() for k, v in module.model.named_parameters()})


def _fit(tmp_path, max_steps: int, ckpt_path=None) -> tuple[CLIPModule, _LiveWeights, pl.Trainer]:
    pl.seed_everything(0)
    module = CLIPModule(model=MODEL, loss=LOSS, optim=OPTIM, ema={"decay": 0.9, "warmup": True})
    record = _LiveWeights()
    trainer = quiet_trainer(
        max_steps=max_steps,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[record],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=Data(), ckpt_path=ckpt_path)
    return module, record, trainer


def test_every_step_averaged_saved_and_resumed_exactly(tmp_path):
    module, first, trainer = _fit(tmp_path, max_steps=3)
    expected = _reference(first.sequence, 0.9, warmup=True)
    averaged = _averaged(module)
    assert averaged.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key], value, rtol=1e-6, atol=1e-7)
    assert not torch.equal(averaged["visual.head.proj.weight"], first.sequence[-1]["visual.head.proj.weight"])
    path = tmp_path / "step3.ckpt"
    trainer.save_checkpoint(path)
    assert {f"ema.weights.{k}" for k in expected} | {"ema.num_updates"} <= set(torch.load(path)["state_dict"])

    loaded = load_module(path)  # evaluation's loader rebuilds the average too
    for key, value in averaged.items():
        torch.testing.assert_close(loaded.ema.weights.state_dict()[key], value, rtol=0, atol=0)

    resumed, second, _ = _fit(tmp_path, max_steps=5, ckpt_path=str(path))
    for key, value in averaged.items():  # restored bit for bit before the first resumed step
        torch.testing.assert_close(second.at_start[key], value, rtol=0, atol=0)
    assert int(resumed.ema.num_updates) == 5
    expected = _reference(first.sequence + second.sequence, 0.9, warmup=True)
    for key, value in expected.items():  # and the resumed steps continue the same warmup schedule
        torch.testing.assert_close(_averaged(resumed)[key], value, rtol=1e-6, atol=1e-7)


def test_config_rules(cfg_factory):
    assert not cfg_factory([]).ema  # ema=none by default
    cfg = cfg_factory(["ema=default"])
    validate(cfg)
    assert cfg.ema.decay == 0.9999
    with pytest.raises(ConfigError, match=r"ema.decay=1.5 must be a number in \[0, 1\)"):
        validate(cfg_factory(["ema=default", "ema.decay=1.5"]))
    with pytest.raises(ConfigError, match="ema.every is not an option"):
        validate(cfg_factory(["ema=default", "+ema.every=2"]))
    with pytest.raises(ConfigError, match="DeepSpeed's engine"):
        validate(cfg_factory(["ema=default", "trainer=deepspeed"]))


class _ValData(Data):
    def val_dataloader(self):
        return self.train_dataloader()


def test_validation_scores_the_average_beside_the_live_weights(tmp_path):
    from cliplab.callbacks.retrieval import RetrievalCallback

    module, _, _ = _fit(tmp_path, max_steps=3)

    def validate_once(module):
        trainer = pl.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[RetrievalCallback(ks=(1,))], default_root_dir=str(tmp_path),
        )  # fmt: skip
        return trainer.validate(module, datamodule=_ValData(), verbose=False)[0]

    both = validate_once(module)
    ema, module.ema = module.ema, None
    with ema.swapped_in(module.model):  # the average alone, as the live weights of a plain module
        averaged = validate_once(module)
    live = validate_once(module)
    for key in ("val/loss", "retrieval/val/image_to_text_R@1", "retrieval/val/text_to_image_R@1"):
        assert both[key] == pytest.approx(live[key], abs=1e-6)
        assert both[f"ema/{key}"] == pytest.approx(averaged[key], abs=1e-6)
    assert both["ema/val/loss"] != pytest.approx(both["val/loss"], abs=1e-4)  # 3 steps apart: they differ

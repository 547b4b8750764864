"""A FLOP count that fails drops MFU and flops_seen, or a sweep job's compute: it says so, once."""

import logging

import cliplab.models.flops as flops
from cliplab.lit.module import CLIPModule
from cliplab.sweeps import collect
from tests._mp_train_script import LOSS, MODEL, OPTIM


def _refuse(*args, **kwargs):
    raise NotImplementedError("meta tensors cannot run this tower")


def test_module_warns_when_flops_cannot_be_counted(monkeypatch, caplog):
    monkeypatch.setattr(flops, "model_flops_per_sample", _refuse)
    module = CLIPModule(model=MODEL, loss=LOSS, optim=OPTIM)
    with caplog.at_level(logging.WARNING):
        assert module.flops_per_sample is None
        assert module.flops_per_sample is None  # cached: warned once
    messages = [r.getMessage() for r in caplog.records if "FLOPs" in r.getMessage()]
    assert len(messages) == 1 and "MFU and train/flops_seen are not logged" in messages[0]
    assert "meta tensors cannot run this tower" in messages[0]


def test_sweep_collection_warns_when_flops_cannot_be_counted(monkeypatch, caplog):
    monkeypatch.setattr(flops, "train_flops_per_sample", _refuse)
    collect._flops_cached.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert collect._flops_cached("embed_dim: 8\n") is None
    collect._flops_cached.cache_clear()
    assert any("left off the compute axis" in r.getMessage() for r in caplog.records)

"""Feature-cache accumulation (`accumulation=feature_cache`) is a setting of the training step: with any
contrastive loss (SigLIP here) one Lightning step gives the loss and the gradients of the plain big-batch
step, through Lightning's own optimizer-step hooks (the gradients are read in `on_before_optimizer_step`)."""

import math

import pytest
import pytorch_lightning as pl
import torch

from cliplab.lit.module import CLIPModule
from cliplab.utils.errors import ConfigError
from tests._tiny import MODEL, quiet_trainer

SIGLIP_MODEL = {**MODEL, "init_logit_scale": math.log(10), "init_logit_bias": -10.0}
SIGLIP = {"_target_": "cliplab.losses.SigLipLoss"}
# SGD: the update is the gradient itself (Adam's first update is lr * sign(grad), noisy for tiny grads)
OPTIM = {"_target_": "torch.optim.SGD", "lr": 0.1}


class _Grads(pl.Callback):
    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.grads = {
            name: p.grad.clone() for name, p in module.model.named_parameters() if p.grad is not None
        }


def _one_step(accumulation: dict | None) -> tuple[dict, dict, float]:
    torch.manual_seed(0)
    module = CLIPModule(model=SIGLIP_MODEL, loss=SIGLIP, optim=OPTIM, accumulation=accumulation)
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(10, 3, 32, 32, generator=gen), torch.randint(1, 63, (10, 8), generator=gen))
    grads = _Grads()
    # Lightning's clipping runs (a no-op bound) on both paths
    trainer = quiet_trainer(max_steps=1, gradient_clip_val=1e9, callbacks=[grads])
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None))
    params = {name: p.detach().clone() for name, p in module.model.named_parameters()}
    return grads.grads, params, float(trainer.callback_metrics["train/loss"])


def test_feature_cache_composes_with_siglip():
    plain_grads, plain_params, plain_loss = _one_step(None)
    # chunks of 4, 4 and 2: the loss still sees the whole batch of 10
    grads, params, loss = _one_step({"mode": "feature_cache", "chunk_size": 4})
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    assert grads.keys() == plain_grads.keys() and "logit_bias" in grads and "logit_scale" in grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    for name, param in params.items():  # the optimizer step (and its logit-scale clamp) ran alike
        torch.testing.assert_close(param, plain_params[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("accumulation", "message"),
    [
        ({"mode": "gradcache"}, "accumulation.mode='gradcache' must be one of none, feature_cache"),
        ({"mode": "feature_cache", "chunk_size": 0}, "accumulation.chunk_size=0 must be a positive integer"),
    ],
)
def test_bad_accumulation_is_named(accumulation, message):
    with pytest.raises(ConfigError, match=message):
        CLIPModule(model=SIGLIP_MODEL, loss=SIGLIP, optim=OPTIM, accumulation=accumulation)


def test_checkpoints_of_the_old_feature_cache_loss_still_load():
    # hparams saved by loss=clip_gradcache before accumulation was a setting of the step
    old = {"_target_": "cliplab.losses.feature_cache.FeatureCacheLoss", "loss": SIGLIP, "chunk_size": 4}
    module = CLIPModule(model=SIGLIP_MODEL, loss=old, optim=OPTIM)
    assert module.hparams.loss == SIGLIP and module.feature_cache_chunk == 4
    assert module.hparams.accumulation == {"mode": "feature_cache", "chunk_size": 4}

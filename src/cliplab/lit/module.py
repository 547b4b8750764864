"""The LightningModule: a CLIP model, a contrastive loss, AdamW and a schedule, all from plain config."""

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from cliplab.lit import rng_state
from cliplab.lit.ema import EmaWeights, ema_enabled
from cliplab.lit.loader_resume import restore_loader_position
from cliplab.lit.param_groups import param_groups
from cliplab.lit.teacher import Teacher, distill_enabled
from cliplab.losses.distill_loss import DistillLoss
from cliplab.losses.gather import gather_rows, local_only
from cliplab.losses.grad_cache import FeatureCache, feature_cache_chunk
from cliplab.models.build import build_clip, build_tokenizer, current_layout
from cliplab.models.clip import MAX_LOGIT_SCALE
from cliplab.models.lora import add_lora
from cliplab.models.lora import enabled as lora_enabled
from cliplab.utils.errors import ConfigError

log = logging.getLogger(__name__)


class CLIPModule(pl.LightningModule):
    """Trains a CLIP model.

    The constructor takes plain config dicts (never modules), so the checkpoint holds everything needed
    to rebuild the run; the towers are built in `configure_model`, the hook sharded strategies and
    `load_from_checkpoint` both call. `config` is the fully resolved run config, stored for evaluation.
    `accumulation` (`conf/accumulation/`) is how a step reaches its batch: `{mode: none}` (one forward and
    backward) or `{mode: feature_cache, chunk_size: N}` (GradCache: the towers run N samples at a time, the
    loss sees the whole batch, gradients equal to one big-batch backward), for any contrastive loss.
    `distill` (`conf/distill/`): `{teacher: {ckpt_path, model}, weight}` adds `weight` x the logit distillation
    loss from a frozen teacher (`cliplab.lit.teacher`); `ema` (`conf/ema/`): `{decay, warmup}` keeps an
    exponential moving average of the weights (`cliplab.lit.ema`) in `self.ema`, part of the state dict.
    `lora` (`conf/lora/`): LoRA adapters injected after the model is built (`cliplab.models.lora`); only
    they (and `lora.also_train`) train, and checkpoints hold the adapted model's keys.
    """

    def __init__(
        self,
        model: dict,
        loss: dict,
        optim: dict,
        scheduler: dict | None = None,
        compile: bool = False,
        config: dict | None = None,
        accumulation: dict | None = None,
        distill: dict | None = None,
        ema: dict | None = None,
        lora: dict | None = None,
    ):
        super().__init__()
        if str(loss.get("_target_", "")).endswith("FeatureCacheLoss"):  # a checkpoint of loss=clip_gradcache
            # from before accumulation was a setting of the step: the wrapped loss, feature-cache accumulation
            loss, accumulation = (
                loss["loss"],
                {"mode": "feature_cache", "chunk_size": loss.get("chunk_size", 64)},
            )
        # a checkpoint from before `model.tokenizer`: its text tower config carried the tokenizer
        model = current_layout(model)
        self.save_hyperparameters()
        self.model = None
        self.loss_fn = instantiate(loss)
        # The run's one tokenizer: the data module tokenizes with it, evaluation and callbacks read it here.
        self.tokenizer = build_tokenizer(model)
        self.samples_seen = 0
        # A CPU scalar refilled each step: a Python number would become a new device tensor every step in
        # `self.log` (a host-to-device copy that waits for the GPU); loggers read a CPU tensor without waiting.
        self._samples_seen_value = torch.zeros(())
        # FLOPs per sample by (text length, with backward)
        self._flops_cache: dict[tuple[int | None, bool], float | None] = {}
        self._sharded = self._compiled = self._adapted = False
        self._rng_states_to_restore = None  # from a checkpoint, until on_train_start sets them
        # Feature-cache accumulation: training_step embeds the chunks without autograd and returns the loss
        # of the cached features; `backward` back-propagates it through the towers chunk by chunk. Lightning
        # keeps the rest of the step (zero_grad, clipping, optimizer_step and its hooks, the scheduler).
        self.feature_cache_chunk = feature_cache_chunk(accumulation)
        self._feature_cache: FeatureCache | None = None  # from training_step to backward
        self.distill_weight = float((distill or {}).get("weight", 1.0))
        self.distill_loss = DistillLoss() if distill_enabled(distill) else None
        # set by whoever fits (the pipeline: cliplab.checkpoints.teacher.load_teacher), never saved
        self.teacher: Teacher | None = None
        self.ema: EmaWeights | None = None  # built in configure_model, beside the (possibly sharded) model

    def build_model(self) -> None:
        """The plain CLIP model, without adapters (the pipeline loads pretrained weights into it)."""
        if self.model is None:
            self.model = build_clip(self.hparams.model)

    def configure_model(self) -> None:
        # Idempotent: called by fit, by load_from_checkpoint, by sharded strategies, and by the pipeline
        # when it loads pretrained weights before fitting.
        self.build_model()
        lora = self.hparams.get("lora")
        if not self._adapted and lora_enabled(lora):  # before sharding: FSDP2 shards the adapted blocks
            add_lora(self.model, lora)
            self._adapted = True
        if self.device_mesh is not None and not self._sharded:  # ModelParallelStrategy: FSDP2 per block
            from cliplab.lit.sharding import shard_model

            # cliplab.lit.sharding.FSDP2Strategy carries the FSDP2 options (mixed precision, resharding).
            options = getattr(getattr(self._trainer, "strategy", None), "fsdp_kwargs", {})
            shard_model(self.model, self.device_mesh, **options)
            self._sharded = True
        if ema_enabled(self.hparams.get("ema")) and self.ema is None:
            # after sharding: the average holds DTensors sharded as the live parameters
            self.ema = EmaWeights(self.model, **self.hparams.ema)
        if self._uses_deepspeed():
            # ZeRO flattens parameters into contiguous buffers (and views them flat): NHWC weights of
            # channels_last towers go back to NCHW; the towers' inputs stay NHWC.
            self.model.to(memory_format=torch.contiguous_format)
        if self.hparams.compile and not self._compiled:
            # Compile the towers, not the CLIP module, so state-dict keys keep no `_orig_mod.` prefix.
            for tower in (self.model.visual, self.model.text):
                tower.compile()
            self._compiled = True

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.distill_loss is not None and self.teacher is None:
            raise ConfigError(
                "CLIPModule(distill=...) fits with a teacher: set module.teacher = "
                "cliplab.checkpoints.teacher.load_teacher(module.hparams.distill, module.hparams.model) first "
                "(the pipeline does it at start-up)"
            )

    def _uses_deepspeed(self) -> bool:
        return "DeepSpeed" in type(getattr(self._trainer, "strategy", None)).__name__

    @property
    def flops_per_sample(self) -> float | None:
        """Training FLOPs per sample at the full text context, counted once on the meta device when first
        asked for (a run that never asks never pays the count, about a second of compute)."""
        return self._flops_at(None)

    def _flops_at(self, text_length: int | None, training: bool = True) -> float | None:
        """FLOPs per sample with `text_length` tokens (None: the full context), forward and backward when
        `training`, else forward only; counted once per case."""
        cache, key = self._flops_cache, (text_length, training)
        if key not in cache:
            from cliplab.models.flops import model_flops_per_sample

            # Asked from hooks that may run in inference mode (ThroughputMonitor); counting needs a backward.
            try:
                with torch.inference_mode(False), torch.enable_grad():
                    cache[key] = model_flops_per_sample(self.hparams.model, text_length, backward=training)
            except Exception as err:  # a tower the meta device cannot run: no FLOPs, never a failed run
                log.warning(
                    "cannot count the model's FLOPs (%s: %s): MFU and train/flops_seen are not logged",
                    type(err).__name__,
                    err,
                )
                cache[key] = None
        return cache[key]

    @property
    def flops_per_batch(self) -> float | None:
        """Read by the throughput monitor after every batch: the work the last batch really did, with its
        tokens trimmed to its longest caption (the data module's `trim_padding`); forward and backward in
        training, the forward alone in validation."""
        batch_size = getattr(self, "_batch_size", None)
        per_sample = self._flops_at(self._text_length, self._batch_trains) if batch_size else None
        return None if per_sample is None else per_sample * batch_size

    def _note_batch(self, batch, training: bool) -> None:
        self._batch_size, self._batch_trains = batch[0].shape[0], training
        tokens = batch[1]
        full = self.hparams.model.get("context_length")
        length = tokens.shape[1] if isinstance(tokens, torch.Tensor) and tokens.ndim == 2 else None
        self._text_length = None if length == full else length

    def on_train_start(self) -> None:
        restore_loader_position(self.trainer)  # a resumed run continues mid-epoch where it stopped
        if self.ema is not None:
            self.ema.forget_count()  # a restored checkpoint brought its own update count
        saved, self._rng_states_to_restore = self._rng_states_to_restore, None
        if saved is not None and not rng_state.restore(saved):
            log.warning("the checkpoint holds the random states of another world size: not restored")

    def on_validation_batch_start(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._note_batch(batch, training=False)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._note_batch(batch, training=True)
        # Lightning zeroes gradients between the forward and the backward, so last step's gradients would
        # stay alive through this step's forward, on top of its activations (the memory peak). They were
        # consumed by the last optimizer step: free them now. Lightning's own zero_grad is then a no-op.
        if self.automatic_optimization and batch_idx % self.trainer.accumulate_grad_batches == 0:
            for optimizer in self.trainer.optimizers:
                optimizer.zero_grad(set_to_none=True)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict:
        return self.model(images, tokens)

    def _step_loss(self, batch) -> tuple[torch.Tensor, dict]:
        images, tokens = batch
        out = self.model(images, tokens)
        loss = self.loss_fn(
            out["image_features"], out["text_features"], out["logit_scale"], out["logit_bias"]
        )
        if self.teacher is not None:
            teacher = self.teacher(images, tokens)
            distill = self.distill_loss(
                out["image_features"],
                out["text_features"],
                out["logit_scale"],
                teacher["image_features"],
                teacher["text_features"],
                teacher["logit_scale"],
            )
            self.log("train/contrastive_loss", loss.detach())
            self.log("train/distill_loss", distill.detach())
            loss = loss + self.distill_weight * distill
        return loss, out

    def _feature_cache_loss(self, batch) -> tuple[torch.Tensor, dict]:
        """The first half of a GradCache step: the loss over the whole batch on features embedded without
        autograd; `backward` does the second half."""
        images, tokens = batch
        ddp = self._ddp()
        if ddp is not None:
            # The towers' gradients come from several backward passes (one per chunk) outside DDP's view:
            # DDP's reducer must not expect them (as Lightning does for manual optimization); `backward`
            # averages them over ranks once the last chunk is done. Read by DDP after this forward returns.
            ddp.require_backward_grad_sync = False
        self._feature_cache = FeatureCache(self.model, images, tokens, self.feature_cache_chunk)
        loss, logit_scale = self._feature_cache.loss(self.loss_fn)
        return loss, {"logit_scale": logit_scale}

    def _ddp(self):
        model = getattr(getattr(self._trainer, "strategy", None), "model", None)
        return model if isinstance(model, torch.nn.parallel.DistributedDataParallel) else None

    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        cache, self._feature_cache = self._feature_cache, None
        super().backward(loss, *args, **kwargs)
        if cache is None:
            return
        # the re-run under the same autocast as training_step's first pass (the precision plugin's context)
        with self.trainer.precision_plugin.forward_context():
            cache.backward_through_towers()
        if self.trainer.world_size > 1:  # the towers ran outside DDP's reducer: reduce like DDP would
            for param in self.model.parameters():
                if param.grad is not None:
                    torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.AVG)
        ddp = self._ddp()
        if ddp is not None:
            ddp.require_backward_grad_sync = True

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.feature_cache_chunk:
            loss, out = self._feature_cache_loss(batch)
        else:
            loss, out = self._step_loss(batch)
        self.samples_seen += batch[0].shape[0] * self.trainer.world_size
        # No `prog_bar`: Lightning would call `.item()` on it after every batch (a wait for the GPU); the
        # default progress bar (cliplab.callbacks.progress.ClipProgressBar) shows it as of logging steps.
        self.log("train/loss", loss)
        # The temperature as the loss used it: exp of the clamped parameter (at most 100), not the log-space value.
        self.log("train/logit_scale", out["logit_scale"].detach())
        self.log("train/samples_seen", self._samples_seen_value.fill_(self.samples_seen))
        return loss

    def validation_step(self, batch, batch_idx: int) -> dict:
        images, tokens = batch
        features = self._validate(images, tokens, "val/loss")
        if self.ema is not None:  # the moving average on the same batch, beside the live weights
            with self.ema.swapped_in(self.model):
                features["ema"] = self._validate(images, tokens, "ema/val/loss")
        return features

    def _validate(self, images: torch.Tensor, tokens: torch.Tensor, name: str) -> dict:
        # Ranks hold different numbers of validation samples (each sample once): the loss is that of the
        # gathered global batch, computed alike on every rank, so nothing else needs reducing.
        out = self.model(images, tokens)
        image_features, text_features = gather_rows(out["image_features"]), gather_rows(out["text_features"])
        with local_only():
            loss = self.loss_fn(image_features, text_features, out["logit_scale"], out["logit_bias"])
        self.log(name, loss, prog_bar=name == "val/loss", batch_size=image_features.shape[0])
        # this rank's features, for the callbacks (retrieval) that would otherwise encode the batch again
        return {"image_features": out["image_features"], "text_features": out["text_features"]}

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self._clamp_logit_scale()
        if self.ema is not None:  # every optimizer step, after the clamp: the average of what trains
            self.ema.update(self.model)

    def _clamp_logit_scale(self) -> None:
        # The one place the temperature is clamped: at most 100, as in the CLIP paper.
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def configure_optimizers(self) -> Any:
        optim_cfg = dict(self.hparams.optim)
        weight_decay = optim_cfg.pop("weight_decay", 0.0)
        groups = param_groups(self, weight_decay)
        # DeepSpeed wraps the optimizer around its own flat partitions: leave its choice alone.
        if not self._uses_deepspeed() and _fusable(optim_cfg, groups):
            # One kernel per step instead of ~10 passes over every parameter (the 49408-row token
            # embedding dominates); measured 4x faster on CPU. An explicit fused/foreach in the config wins.
            optim_cfg["fused"] = True
        # _partial_: hydra would turn the param-group dicts into DictConfigs if passed as a kwarg.
        optimizer = instantiate(optim_cfg, _partial_=True)(groups)
        if not self.hparams.scheduler:
            return optimizer
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = instantiate(self.hparams.scheduler, optimizer=optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["samples_seen"] = self.samples_seen
        checkpoint["rng_states"] = rng_state.capture()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.samples_seen = checkpoint.get("samples_seen", 0)
        # set in on_train_start, after the loaders' iterators (which draw their seeds) are made again
        self._rng_states_to_restore = checkpoint.get("rng_states")


_FUSED_OPTIMIZERS = {
    "torch.optim.AdamW",
    "torch.optim.Adam",
    "torch.optim.adamw.AdamW",
    "torch.optim.adam.Adam",
}


def _fusable(optim_cfg: dict, groups: list[dict]) -> bool:
    """Whether to default torch's Adam/AdamW to its fused kernel: plain (unsharded) fp tensors on CPU/CUDA."""
    if optim_cfg.get("_target_") not in _FUSED_OPTIMIZERS or {"fused", "foreach"} & optim_cfg.keys():
        return False
    params = [p for g in groups for p in g["params"]]
    return all(
        type(p.data) is torch.Tensor and p.device.type in ("cpu", "cuda") and p.is_floating_point()
        for p in params
    )

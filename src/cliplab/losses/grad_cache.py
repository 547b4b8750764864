"""Contrastive batches larger than memory: feature-cache gradient accumulation (GradCache, Gao et al. 2021).

Plain gradient accumulation changes a contrastive loss (each micro-batch only sees its own negatives).
Instead: embed every chunk without autograd, compute the loss over the whole batch on the cached
features (gradient w.r.t. the features, the logit scale and the bias), then re-embed each chunk with
autograd and back-propagate its slice of the cached feature gradient. Activation memory is one chunk;
the parameter gradients equal those of one big-batch backward (the towers run twice).
"""

from collections.abc import Callable

import torch

from cliplab.utils.errors import ConfigError

ACCUMULATION_MODES = ("none", "feature_cache")


def feature_cache_chunk(accumulation: dict | None) -> int | None:
    """The chunk size of `accumulation` (the `conf/accumulation/` config: `{mode: none}` or
    `{mode: feature_cache, chunk_size: N}`), or None when a step is one forward and backward."""
    accumulation = dict(accumulation or {})
    mode = accumulation.get("mode", "none") or "none"
    if mode not in ACCUMULATION_MODES:
        raise ConfigError(f"accumulation.mode={mode!r} must be one of {', '.join(ACCUMULATION_MODES)}")
    if mode == "none":
        return None
    chunk = accumulation.get("chunk_size")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"accumulation.chunk_size={chunk!r} must be a positive integer, e.g. 64")
    return chunk


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class FeatureCache:
    """The first half of a GradCache step: every chunk embedded without autograd, the features kept.

    `image_features` and `text_features` are leaves that require grad: compute the loss on them (with the
    model's `logit_scale` and `logit_bias`, which get their gradients directly), call `backward()` on it,
    then `backward_through_towers()` re-embeds each chunk with autograd and back-propagates its slice of
    the features' gradient into the towers.
    """

    def __init__(self, model, images: torch.Tensor, tokens: torch.Tensor, chunk_size: int):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.model, self.chunk_size, self.device = model, int(chunk_size), images.device
        self.image_chunks, self.token_chunks = images.split(self.chunk_size), tokens.split(self.chunk_size)
        self.states, image_cache, text_cache = [], [], []
        with torch.no_grad():
            for image_chunk, token_chunk in zip(self.image_chunks, self.token_chunks):
                self.states.append(_rng_state(self.device))
                image_cache.append(model.encode_image(image_chunk, normalize=True))
                text_cache.append(model.encode_text(token_chunk, normalize=True))
        self.end_state = _rng_state(self.device)
        self.image_features = torch.cat(image_cache).requires_grad_()
        self.text_features = torch.cat(text_cache).requires_grad_()

    def loss(self, loss_fn: Callable) -> tuple[torch.Tensor, torch.Tensor]:
        """`loss_fn` on the cached features, and the temperature it used: clamped as the model's forward
        clamps it (at most 100, no gradient beyond), exponentiated."""
        # here, not at the top: cliplab.models.clip imports cliplab.losses (its gather helpers)
        from cliplab.models.clip import MAX_LOGIT_SCALE

        model = self.model
        logit_scale = model.logit_scale.clamp(0, MAX_LOGIT_SCALE).exp()
        return loss_fn(self.image_features, self.text_features, logit_scale, model.logit_bias), logit_scale

    def backward_through_towers(self) -> None:
        """After the loss's backward: re-run each chunk with its recorded RNG state (same dropout masks) and
        back-propagate its slice of the cached features' gradient."""
        if self.image_features.grad is None or self.text_features.grad is None:
            raise RuntimeError("call backward() on the loss of the cached features first")
        image_grads = self.image_features.grad.split(self.chunk_size)
        text_grads = self.text_features.grad.split(self.chunk_size)
        for state, image_chunk, token_chunk, image_grad, text_grad in zip(
            self.states, self.image_chunks, self.token_chunks, image_grads, text_grads
        ):
            _set_rng_state(state, self.device)
            features = (
                self.model.encode_image(image_chunk, normalize=True),
                self.model.encode_text(token_chunk, normalize=True),
            )
            # A locked tower (LiT) gives features without a graph: re-run still (its RNG draws, e.g. patch
            # dropout, keep the other tower's masks as in the first pass), nothing to back-propagate.
            pairs = [(f, g) for f, g in zip(features, (image_grad, text_grad)) if f.requires_grad]
            if pairs:
                torch.autograd.backward(*zip(*pairs))
        _set_rng_state(self.end_state, self.device)  # the generator as if the batch had been embedded once


def grad_cache_backward(
    model,
    images: torch.Tensor,
    tokens: torch.Tensor,
    loss_fn: Callable,
    chunk_size: int,
) -> torch.Tensor:
    """Accumulate into `.grad` the gradients of `loss_fn` over the whole batch; return the loss (detached).

    `model` has `encode_image`, `encode_text` (with `normalize=`), `logit_scale` (log space) and
    `logit_bias` (or None), like `cliplab.models.clip.CLIP`. The RNG state is recorded before each chunk
    and restored for its re-run, so dropout masks match between the two passes. Modules with batch
    statistics (BatchNorm) see each chunk twice. Under DDP, pass the unwrapped module and all-reduce the
    gradients afterwards (or let the strategy do it): the gathered loss already sums the feature
    gradients across ranks, the per-chunk re-runs need no communication. The training module runs the
    same two halves (`FeatureCache`) split across Lightning's `training_step` and `backward`.
    """
    cache = FeatureCache(model, images, tokens, chunk_size)
    loss, _ = cache.loss(loss_fn)
    loss.backward()
    cache.backward_through_towers()
    return loss.detach()

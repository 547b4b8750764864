"""Contrastive batches larger than memory: feature-cache gradient accumulation (GradCache, Gao et al. 2021).

Plain gradient accumulation changes a contrastive loss (each micro-batch only sees its own negatives).
Instead: embed every chunk without autograd, compute the loss over the whole batch on the cached
features (gradient w.r.t. the features, the logit scale and the bias), then re-embed each chunk with
autograd and back-propagate its slice of the cached feature gradient. Activation memory is one chunk;
the parameter gradients equal those of one big-batch backward (the towers run twice).
"""

from collections.abc import Callable

import torch


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


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
    gradients across ranks, the per-chunk re-runs need no communication.
    """
    # here, not at the top: cliplab.models.clip imports cliplab.losses (its gather helpers)
    from cliplab.models.clip import MAX_LOGIT_SCALE

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    device = images.device
    image_chunks, token_chunks = images.split(chunk_size), tokens.split(chunk_size)

    states, image_cache, text_cache = [], [], []
    with torch.no_grad():
        for image_chunk, token_chunk in zip(image_chunks, token_chunks):
            states.append(_rng_state(device))
            image_cache.append(model.encode_image(image_chunk, normalize=True))
            text_cache.append(model.encode_text(token_chunk, normalize=True))
    end_state = _rng_state(device)
    image_features = torch.cat(image_cache).requires_grad_()
    text_features = torch.cat(text_cache).requires_grad_()

    # gradients reach logit_scale / logit_bias directly, and the features' .grad; the temperature is
    # clamped as the model's forward clamps it (at most 100, no gradient beyond)
    logit_scale = model.logit_scale.clamp(0, MAX_LOGIT_SCALE).exp()
    loss = loss_fn(image_features, text_features, logit_scale, model.logit_bias)
    loss.backward()

    image_grads = image_features.grad.split(chunk_size)
    text_grads = text_features.grad.split(chunk_size)
    for state, image_chunk, token_chunk, image_grad, text_grad in zip(
        states, image_chunks, token_chunks, image_grads, text_grads
    ):
        _set_rng_state(state, device)
        features = (
            model.encode_image(image_chunk, normalize=True),
            model.encode_text(token_chunk, normalize=True),
        )
        torch.autograd.backward(features, (image_grad, text_grad))
    _set_rng_state(end_state, device)  # leave the generator as if the batch had been embedded once
    return loss.detach()

"""Sigmoid (SigLIP) pairwise loss over the global batch."""

import torch
import torch.nn.functional as F

from cliplab.losses.gather import all_gather_with_grad, rank_and_world_size
from cliplab.losses.interface import LossModule
from cliplab.utils.precision import at_least_fp32


class SigLipLoss(LossModule):
    """Binary log-loss on every image-text pair: `-sum log sigmoid(z_ij (t x_i.y_j + b)) / local_batch`,
    with z = +1 on matching pairs and -1 elsewhere (Zhai et al. 2023). Needs a learned bias
    (`init_logit_bias` around -10, `init_logit_scale` ln 10 in the model config).

    Distributed exchange: text features are ALL-GATHERED with gradient (one collective of
    `global x embed_dim` floats); each rank scores its local images against all texts, logits
    `local x global`. The paper's ring (neighbour) exchange overlaps communication with compute on
    accelerators; on the CPU/gloo and few-GPU setups cliplab targets the single all-gather is simpler
    and moves the same bytes. Normalised by the local batch, so the mean over ranks is the loss of the
    concatenated batch and DDP's gradient average equals the single-process gradient.
    """

    contrastive = True  # pairwise, but its negatives are the batch's other pairs
    needs_logit_bias = True

    def score(self, image_features, text_features, logit_scale, logit_bias) -> torch.Tensor:
        if logit_bias is None:
            raise ValueError("SigLipLoss needs a logit_bias: build the model with init_logit_bias (e.g. -10)")
        with torch.autocast(image_features.device.type, enabled=False):  # fp32 logits, as in ClipLoss
            image_features, text_features = at_least_fp32(image_features), at_least_fp32(text_features)
            rank, _ = rank_and_world_size()
            all_text = all_gather_with_grad(text_features)
            local = image_features.shape[0]
            logits = logit_scale * image_features @ all_text.T + logit_bias
            # +1 on this rank's diagonal block, -1 elsewhere: logsigmoid(-x) for all, fixed up on matches
            signs = torch.full_like(logits, -1.0)
            columns = torch.arange(local, device=logits.device) + rank * local
            signs[torch.arange(local, device=logits.device), columns] = 1.0
            return -F.logsigmoid(signs * logits).sum() / local

"""Exact CLIP loss that never materialises the logit matrix.

Rows of the local image block are scored against all texts `block_size` rows at a time. The forward
keeps only per-row and per-column log-sum-exps (the column ones updated online across blocks and, when
distributed, merged across ranks); the backward recomputes each logit block and turns it into the
gradient block `G = coef * (softmax_rows + softmax_cols - 2 I)`. Peak memory is two `block x global`
buffers instead of several `global x global` tensors, and it needs 4 matmuls of the logit size
(forward 1, backward 3) where autograd over the plain loss needs 6.

Distributed: only the text features are gathered (with gradient). Each rank owns its image rows and
computes the full rows of G for them; column statistics are merged with two all-reduces of `global`
floats. Each rank's text gradient is a partial sum that the gather's backward adds up across ranks.
"""

import torch
import torch.distributed as dist

from cliplab.losses.gather import all_gather_with_grad, is_distributed, rank_and_world_size
from cliplab.losses.interface import LossModule


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    # half-precision features are scored and accumulated in fp32
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _merge_column_stats_across_ranks(col_max: torch.Tensor, col_sum: torch.Tensor) -> None:
    """In place: turn this rank's (max, sum of exp(l - max)) per column into the global ones."""
    global_max = col_max.clone()
    dist.all_reduce(global_max, op=dist.ReduceOp.MAX)
    col_sum.mul_((col_max - global_max).exp_())
    dist.all_reduce(col_sum, op=dist.ReduceOp.SUM)
    col_max.copy_(global_max)


class _ChunkedClipLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, image, all_text, logit_scale, offset: int, block_size: int):
        # autocast would run the logit matmuls in half precision: the loss is accumulated in fp32 or better
        with torch.autocast(image.device.type, enabled=False):
            return _ChunkedClipLossFunction._forward(ctx, image, all_text, logit_scale, offset, block_size)

    @staticmethod
    def backward(ctx, grad_loss):
        with torch.autocast(grad_loss.device.type, enabled=False):
            return _ChunkedClipLossFunction._backward(ctx, grad_loss)

    @staticmethod
    def _forward(ctx, image, all_text, logit_scale, offset: int, block_size: int):
        dtype = _accumulation_dtype(image.dtype)
        x, y = image.to(dtype), all_text.to(dtype)
        scale = logit_scale.detach().to(dtype)
        n, total = x.shape[0], y.shape[0]
        block = min(block_size, n)

        row_lse = x.new_empty(n)
        col_max = x.new_full((total,), float("-inf"))
        col_sum = x.new_zeros(total)
        logits_buf = x.new_empty(block, total)
        exp_buf = x.new_empty(block, total)
        y_t = y.T
        for start in range(0, n, block):
            rows = min(block, n - start)
            logits, exps = logits_buf[:rows], exp_buf[:rows]
            torch.mm(x[start : start + rows] * scale, y_t, out=logits)
            # rows are complete within a block: exact log-sum-exp
            row_max = logits.amax(dim=1, keepdim=True)
            torch.sub(logits, row_max, out=exps).exp_()
            row_lse[start : start + rows] = exps.sum(dim=1).log_().add_(row_max.squeeze(1))
            # columns accumulate across blocks: rescale the running sum to the new running max
            new_max = torch.maximum(col_max, logits.amax(dim=0))
            col_sum.mul_((col_max - new_max).exp_())
            torch.sub(logits, new_max, out=exps).exp_()
            col_sum.add_(exps.sum(dim=0))
            col_max = new_max
        del logits_buf, exp_buf
        if is_distributed():
            _merge_column_stats_across_ranks(col_max, col_sum)
        col_lse = col_sum.log_().add_(col_max)

        diag = (x * y[offset : offset + n]).sum(dim=1) * scale
        loss = 0.5 / n * ((row_lse - diag).sum() + (col_lse[offset : offset + n] - diag).sum())

        ctx.save_for_backward(image, all_text, logit_scale, row_lse, col_lse)
        ctx.offset, ctx.block = offset, block
        return loss.to(image.dtype)

    @staticmethod
    def _backward(ctx, grad_loss):
        image, all_text, logit_scale, row_lse, col_lse = ctx.saved_tensors
        offset, block = ctx.offset, ctx.block
        dtype = row_lse.dtype
        x, y = image.to(dtype), all_text.to(dtype)
        scale = logit_scale.detach().to(dtype)
        n, total = x.shape[0], y.shape[0]
        coef = grad_loss.to(dtype) * (0.5 / n)
        # fold a positive coefficient into the exponents: exp(l - lse + log c) = c * softmax, one pass fewer
        fold = bool(coef > 0)
        shift = coef.log() if fold else coef.new_zeros(())
        row_shift, col_shift = row_lse - shift, col_lse - shift
        diag_step = 2.0 * coef if fold else 2.0

        grad_x = torch.empty_like(x)
        grad_y = torch.zeros_like(y)
        grad_scale = x.new_zeros(())
        g_buf = x.new_empty(block, total)
        p_buf = x.new_empty(block, total)
        y_t = y.T
        for start in range(0, n, block):
            rows = min(block, n - start)
            x_block = x[start : start + rows]
            g, p = g_buf[:rows], p_buf[:rows]
            torch.mm(x_block * scale, y_t, out=p)
            torch.sub(p, row_shift[start : start + rows, None], out=g).exp_()  # row softmax
            g.add_(p.sub_(col_shift).exp_())  # + column softmax
            g[:, offset + start : offset + start + rows].diagonal().sub_(diag_step)  # - 2 at the targets
            if not fold:
                g.mul_(coef)
            g_y = g @ y
            grad_scale += (g_y * x_block).sum()  # sum(G * logits) / scale, without a block-sized pass
            torch.mul(g_y, scale, out=grad_x[start : start + rows])
            grad_y.addmm_(g.T, x_block, alpha=scale)
        return (
            grad_x.to(image.dtype),
            grad_y.to(all_text.dtype),
            grad_scale.to(logit_scale.dtype).reshape(logit_scale.shape),
            None,
            None,
        )


class ChunkedClipLoss(LossModule):
    """Same value and gradients as `ClipLoss`, in `O(block_size x global)` memory.

    `block_size` is the number of image rows scored at once: larger blocks mean bigger, faster matmuls
    and more memory (two `block_size x global_batch` buffers of the accumulation dtype, fp32 for half
    inputs). `logit_bias` is ignored as in `ClipLoss`. All ranks must have the same local batch.
    """

    contrastive = True
    needs_logit_bias = False

    def __init__(self, block_size: int = 1024):
        super().__init__()
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.block_size = block_size

    def score(self, image_features, text_features, logit_scale, logit_bias) -> torch.Tensor:
        rank, _ = rank_and_world_size()
        all_text = all_gather_with_grad(text_features)
        if not torch.is_tensor(logit_scale):
            logit_scale = torch.tensor(float(logit_scale), dtype=image_features.dtype)
        offset = rank * image_features.shape[0]
        return _ChunkedClipLossFunction.apply(image_features, all_text, logit_scale, offset, self.block_size)

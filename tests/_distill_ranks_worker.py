"""One rank of the two-process distillation-loss check in tests/test_distill.py (kept free of heavy
imports: `mp.spawn` imports this module again in every process)."""

import torch
import torch.distributed as dist

from cliplab.losses.distill_loss import DistillLoss

WORLD, LOCAL = 2, 5
STUDENT_WIDTH, TEACHER_WIDTH = 8, 12  # logits are compared, not features: widths may differ


def _features(seed: int, rows: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image, text = torch.randn(rows, width, generator=g), torch.randn(rows, width, generator=g)
    return torch.nn.functional.normalize(image, dim=1), torch.nn.functional.normalize(text, dim=1)


def all_features():
    """The whole batch: student features, temperature, teacher features, temperature."""
    student = _features(0, WORLD * LOCAL, STUDENT_WIDTH)
    teacher = _features(1, WORLD * LOCAL, TEACHER_WIDTH)
    return student, torch.tensor(14.0), teacher, torch.tensor(60.0)


def worker(rank: int, rendezvous: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    (image, text), scale, (t_image, t_text), t_scale = all_features()
    rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
    image, text = image[rows].clone().requires_grad_(), text[rows].clone().requires_grad_()
    loss = DistillLoss()(image, text, scale, t_image[rows], t_text[rows], t_scale)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)  # mean over ranks = the loss of the whole batch
    grads = [torch.empty_like(image.grad) for _ in range(WORLD)]
    dist.all_gather(grads, image.grad)
    if rank == 0:
        torch.save({"loss": total / WORLD, "image_grad": torch.cat(grads)}, out)
    dist.barrier()
    dist.destroy_process_group()

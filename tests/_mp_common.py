"""What the `_mp_*_script.py` scripts share inside their torchrun processes: the strategies by name, the
two-process CPU trainer, whole tensors from shards, and rank 0's result file.

The scripts import it as a sibling (`from _mp_common import ...`): torchrun puts a script's folder first
on `sys.path`, and pytest puts `tests/` there too.
"""

import json
from pathlib import Path

import pytorch_lightning as pl
import torch
from _tiny import quiet_trainer

WORLD = 2


def strategy(name: str):
    """`ddp` or `fsdp` (cliplab's FSDP2), both over gloo so that CPU processes can run them."""
    if name == "ddp":
        return pl.strategies.DDPStrategy(process_group_backend="gloo")
    from cliplab.lit.sharding import FSDP2Strategy

    return FSDP2Strategy(process_group_backend="gloo")


def mp_trainer(name: str, out: Path, callbacks: list, **limits) -> pl.Trainer:
    """WORLD CPU processes under strategy `name`, fp32, no sanity validation; `limits`: max_steps etc."""
    return quiet_trainer(
        devices=WORLD,
        strategy=strategy(name),
        precision="32-true",
        callbacks=callbacks,
        num_sanity_val_steps=0,
        default_root_dir=str(out),
        **limits,
    )


def full(tensor: torch.Tensor) -> torch.Tensor:
    """A detached copy of the whole tensor; an FSDP2 DTensor is gathered first (a collective: every rank
    must call it in the same order)."""
    tensor = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
    return tensor.detach().clone()


def write_on_rank0(path: Path, result: dict) -> None:
    if torch.distributed.get_rank() == 0:
        path.write_text(json.dumps(result))

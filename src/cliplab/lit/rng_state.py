"""Every rank's global random state (torch, CUDA, numpy, Python) in the checkpoint, restored on resume.

Lightning's own collect/set helpers read and set the states; here they are made plain containers (the
checkpoint loads with weights_only=True) and gathered from every rank (rank 0 writes the checkpoint, each
rank resumes its own stream of draws).
"""

import torch
from lightning_fabric.utilities.seed import _collect_rng_states, _set_rng_states

from cliplab.utils.dist import dist_info


def capture() -> dict:
    """`{"per_rank": [states of rank 0, rank 1, ...]}`; call it on every rank alike (a collective)."""
    states = _collect_rng_states(include_cuda=torch.cuda.is_available())
    if "numpy" in states:
        name, keys, pos, has_gauss, cached = states["numpy"]
        states["numpy"] = [
            name,
            torch.from_numpy(keys.astype("int64")),
            pos,
            has_gauss,
            cached,
        ]  # uint32 tensors do not unpickle safely
    info = dist_info()
    if not info.distributed:
        return {"per_rank": [states]}
    gathered = [None] * info.world_size
    torch.distributed.all_gather_object(gathered, states)
    return {"per_rank": gathered}


def restore(saved: dict) -> bool:
    """Sets this rank's saved states; False (nothing set) when the world size differs from the saved one."""
    per_rank = saved["per_rank"]
    info = dist_info()
    if len(per_rank) != info.world_size:
        return False
    states = dict(per_rank[info.rank])
    if "numpy" in states:
        name, keys, pos, has_gauss, cached = states["numpy"]
        states["numpy"] = (name, keys.numpy().astype("uint32"), pos, has_gauss, cached)
    if not torch.cuda.is_available():
        states.pop("torch.cuda", None)
    _set_rng_states(states)
    return True

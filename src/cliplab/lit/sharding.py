"""FSDP2 for CLIP: `fully_shard` per tower block, then per tower, then the root.

One shard unit per block keeps the peak memory at one block's full parameters while the rest stay
sharded; the towers and the root collect what is left (embeddings, final norms, projections, the
temperature). Activation checkpointing stays the towers' own `set_grad_checkpointing()`.

`FSDP2Strategy` is Lightning's `ModelParallelStrategy` with the defaults a pure data-parallel CLIP run
wants (every process in the data-parallel dimension, no tensor parallelism) plus the FSDP2 options
(mixed precision policy, resharding) as plain config; `CLIPModule.configure_model` passes
`strategy.fsdp_kwargs` to `shard_model`.
"""

from collections.abc import Iterable

import torch
from pytorch_lightning.strategies import ModelParallelStrategy
from torch import nn

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    try:
        return _DTYPES[str(value).removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {value!r}; choose one of {', '.join(_DTYPES)} or null") from None


def mixed_precision_policy(
    param_dtype: str | torch.dtype | None = None,
    reduce_dtype: str | torch.dtype | None = None,
    output_dtype: str | torch.dtype | None = None,
):
    """An FSDP2 `MixedPrecisionPolicy` from config strings ("bfloat16", "float32", null)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(
        param_dtype=_dtype(param_dtype), reduce_dtype=_dtype(reduce_dtype), output_dtype=_dtype(output_dtype)
    )


def _towers(model: nn.Module) -> Iterable[nn.Module]:
    return [
        tower for tower in (getattr(model, "visual", None), getattr(model, "text", None)) if tower is not None
    ]


def shard_model(
    model: nn.Module, device_mesh, mp_policy=None, reshard_after_forward: bool = True
) -> nn.Module:
    """Apply FSDP2 to a CLIP model in place and return it.

    `device_mesh` is Lightning's 2-D mesh (`data_parallel`, `tensor_parallel`) or a 1-D mesh; parameters
    are sharded over the data-parallel dimension. `mp_policy` (a `MixedPrecisionPolicy` or a dict of its
    fields) applies to the blocks and towers; the root keeps float32 parameters so the temperature is
    exponentiated in full precision, and towers hand float32 features to the loss.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = device_mesh
    if mesh.mesh_dim_names and "data_parallel" in mesh.mesh_dim_names and mesh.ndim > 1:
        mesh = mesh["data_parallel"]
    if isinstance(mp_policy, dict):
        mp_policy = mixed_precision_policy(**mp_policy)
    block_policy = mp_policy or MixedPrecisionPolicy()
    # Features leave each tower in float32: the contrastive loss is a softmax over large logits.
    tower_policy = MixedPrecisionPolicy(
        param_dtype=block_policy.param_dtype,
        reduce_dtype=block_policy.reduce_dtype,
        output_dtype=torch.float32 if block_policy.param_dtype is not None else block_policy.output_dtype,
    )
    root_policy = MixedPrecisionPolicy(reduce_dtype=block_policy.reduce_dtype)

    # FSDP2 cannot shard 0-d parameters (the temperature and bias): they stay plain replicated tensors
    # whose gradients are averaged here, as DDP would.
    scalars = {param for param in model.parameters() if param.ndim == 0}
    _average_grads_across(scalars, mesh)
    # FSDP2 shards contiguous storage only: NHWC weights of channels_last towers go back to NCHW. Their
    # inputs stay NHWC, so the convolutions still run channels-last (the weights are reordered per call).
    model.to(memory_format=torch.contiguous_format)

    for tower in _towers(model):
        classes = tuple(tower.block_classes()) if hasattr(tower, "block_classes") else ()
        if classes:
            for module in tower.modules():
                if isinstance(module, classes):
                    fully_shard(
                        module,
                        mesh=mesh,
                        mp_policy=block_policy,
                        reshard_after_forward=reshard_after_forward,
                        ignored_params=scalars,
                    )
        fully_shard(
            tower,
            mesh=mesh,
            mp_policy=tower_policy,
            reshard_after_forward=reshard_after_forward,
            ignored_params=scalars,
        )
    # The root's parameters are gathered once per step anyway; keeping them unsharded after forward
    # saves an all-gather in backward.
    fully_shard(model, mesh=mesh, mp_policy=root_policy, reshard_after_forward=False, ignored_params=scalars)
    return model


def _average_grads_across(params: set[nn.Parameter], mesh) -> None:
    """Average each parameter's gradient over the mesh's processes once backward has accumulated it."""
    import torch.distributed as dist

    group, size = mesh.get_group(), mesh.size()
    if size == 1:
        return

    def hook(param: torch.Tensor) -> None:
        # SUM then divide: gloo has no AVG reduction.
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM, group=group)
        param.grad.div_(size)

    for param in params:
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(hook)


class FSDP2Strategy(ModelParallelStrategy):
    """`ModelParallelStrategy` for data-parallel FSDP2 with the sharding options in config.

    Args:
        mixed_precision: `{param_dtype, reduce_dtype, output_dtype}` for FSDP2's `MixedPrecisionPolicy`
            (e.g. bfloat16 params and all-gathers, float32 gradient reduction); use it with
            `trainer.precision=32-true`. null keeps float32 and leaves precision to `trainer.precision`.
        reshard_after_forward: free the gathered block parameters after forward (ZeRO-3 like, least memory);
            False keeps them until backward (ZeRO-2 like, fewer all-gathers).
        data_parallel_size, tensor_parallel_size: as in `ModelParallelStrategy`, but "auto" means every
            process shards data (Lightning's own "auto" puts the processes of a node in the tensor dimension).
    """

    def __init__(
        self,
        mixed_precision: dict | None = None,
        reshard_after_forward: bool = True,
        data_parallel_size: int | str = "auto",
        tensor_parallel_size: int | str = 1,
        **kwargs,
    ):
        super().__init__(
            data_parallel_size=data_parallel_size, tensor_parallel_size=tensor_parallel_size, **kwargs
        )
        self.fsdp_kwargs = {
            "mp_policy": mixed_precision_policy(**mixed_precision) if mixed_precision else None,
            "reshard_after_forward": reshard_after_forward,
        }

    def setup_environment(self) -> None:
        if self._tensor_parallel_size == "auto":
            self._tensor_parallel_size = 1
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes // int(self._tensor_parallel_size)
        super().setup_environment()

"""Self CPU time of a profiled (or op-timed: bench.op_timer) training step by op category (bench.profile_step's
numbers).

Categories go by op name, except that work under an `Optimizer.step` range is the optimizer's (whatever ops
its implementation uses), unless it is nested in a `MODEL_RANGE`: Lightning runs the forward and backward
from the optimizer's closure, so cliplab's worker marks them.
"""

import functools

import torch

OP_CATEGORIES = (  # first match wins; self time, so nested ops are not counted twice
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")),
    ("attention", ("scaled_dot_product",)),
    ("convolution", ("convolution",)),
    ("optimizer", ("Optimizer.step", "_fused_adam")),
)


def op_category(name: str) -> str:
    for category, patterns in OP_CATEGORIES:
        if any(name == p or (not p.startswith("aten::") and p in name) for p in patterns):
            return category
    return "other ops" if name.startswith("aten::") else "python / framework"


MODEL_RANGE = "model step"  # cliplab's forward/loss and backward run inside Lightning's optimizer closure


def _event_category(event) -> str:
    """An op's category; what runs under an `Optimizer.step` range (any implementation) is optimizer,
    unless it is nested in a `MODEL_RANGE` (the forward and backward Lightning runs from the closure)."""
    parent = event
    while parent is not None:
        if parent.name == MODEL_RANGE:
            break
        if parent.name.startswith("Optimizer.step"):
            return "optimizer"
        parent = parent.cpu_parent
    return op_category(event.name)


def in_model_range(fn):
    """`fn` inside a `MODEL_RANGE` profiler range."""

    @functools.wraps(fn)
    def ranged(*args, **kwargs):
        with torch.profiler.record_function(MODEL_RANGE):
            return fn(*args, **kwargs)

    return ranged


def _profiled_ops(profiler):
    """(category, self seconds, FLOPs) of every op a torch.profiler recorded."""
    for event in profiler.events():
        yield event.name, _event_category(event), event.self_cpu_time_total / 1e6, event.flops or 0


def _timed_ops(timer):
    """The same from a `bench.op_timer.OpTimer` (no ranges: a fused or foreach optimizer's ops are its own)."""
    for name, seconds in timer.seconds.items():
        category = "optimizer" if name.startswith("aten::_foreach_") else op_category(name)
        yield name, category, seconds, timer.flops.get(name, 0)


def _matmul_shapes(timer, steps: int, top: int) -> list[dict]:
    """The costliest matmul shapes an OpTimer saw: form, ms and calls per step, FLOP/s inside the step."""
    costliest = sorted(timer.matmul_seconds.items(), key=lambda kv: -kv[1])[:top]
    return [
        {
            "shape": shape._asdict(),
            "label": shape.label(),
            "ms_per_step": seconds * 1e3 / steps,
            "calls_per_step": timer.matmul_calls[shape] / steps,
            "flops_per_s": shape.flops() * timer.matmul_calls[shape] / seconds,
        }
        for shape, seconds in costliest
    ]


def op_breakdown(recorder, steps: int, top: int = 8) -> dict:
    """Self CPU milliseconds per step by category, the FLOP/s the matmuls reached inside the step, and the
    costliest ops outside matmuls; `recorder`: a torch.profiler or a `bench.op_timer.OpTimer` (which also
    gives the costliest matmul shapes)."""
    from bench.op_timer import OpTimer

    ops = _timed_ops(recorder) if isinstance(recorder, OpTimer) else _profiled_ops(recorder)
    ms, by_op, matmul_flops = {}, {}, 0
    for name, category, seconds, flops in ops:
        self_ms = seconds * 1e3 / steps
        ms[category] = ms.get(category, 0.0) + self_ms
        if category == "matmul":
            matmul_flops += flops / steps
        elif category == "other ops":
            by_op[name] = by_op.get(name, 0.0) + self_ms
    matmul_s = ms.get("matmul", 0.0) / 1e3
    return {
        "ms_per_step": ms,
        "top_other_ops_ms": dict(sorted(by_op.items(), key=lambda kv: -kv[1])[:top]),
        "matmul_flops_per_step": matmul_flops,
        "matmul_flops_per_s": matmul_flops / matmul_s if matmul_s else None,
        "matmul_shapes": _matmul_shapes(recorder, steps, top) if isinstance(recorder, OpTimer) else None,
    }

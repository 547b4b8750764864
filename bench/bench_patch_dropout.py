"""FLIP patch dropout: training-step throughput at patch dropout 0.5 (and the speed-up over 0.0), cliplab vs
open_clip, each side with its own implementation (timm's `patch_drop_rate` in cliplab's ViT tower, open_clip's
`vision_cfg.patch_dropout`).

Each worker process runs the training step of `bench_train_step` twice, at rate 0.0 then 0.5 (same weights,
same batches, same precision), and reports the samples/s at 0.5 (the row) and the step-time ratio 0.5 / 0.0
(the `also` row: lower is a larger speed-up; its ratio column > 1 means cliplab gains more from dropping
patches than open_clip). The gate is the first-step loss at 0.0, where both sides compute the same thing (at 0.5
each side drops its own random patches). MFU is left out: the model FLOPs shrink with the dropped tokens.

    python -m bench patch_dropout                 # ViT-B/32 b32 on CPU, fp32 and bf16 (ViT-B/16 b256 on a GPU)
    python -m bench patch_dropout --quick --reps 1  # ViT-B/32 b16 fp32, short: a check that it runs
"""

import os
import sys

import torch

from bench import bench_train_step as step

RATE = 0.5  # FLIP's setting: half the patches


def run_at(spec: dict, rate: float) -> dict:
    """One side's training-step measurement at patch dropout `rate` (bench_train_step's loop and Trainer)."""
    model_cfg = step.model_config(spec["model"])
    model_cfg["image_tower"]["patch_dropout"] = rate
    batches = step.make_batches(model_cfg, spec["batch"], spec.get("distinct_batches", 2), seed=spec["seed"])
    if spec["device"].startswith("cuda"):
        batches = [tuple(t.to(spec["device"]) for t in b) for b in batches]
    run = step.run_cliplab if spec["side"] == "cliplab" else step.run_open_clip
    return run({**spec, "patch_dropout": rate}, model_cfg, batches)


def worker(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    plain, dropping = run_at(spec, 0.0), run_at(spec, spec["rate"])
    return {
        "side": spec["side"],
        "samples_per_s": dropping["samples_per_s"],
        "samples_per_s_without": plain["samples_per_s"],
        "step_s": dropping["step_s"],
        "step_time_ratio": dropping["step_s"] / plain["step_s"],
        "speedup": plain["step_s"] / dropping["step_s"],
        "first_loss": plain["first_loss"],  # the gate: same weights and batch, no patches dropped
        "warmup_s": dropping["warmup_s"],
        "peak_rss_bytes": dropping["peak_rss_bytes"],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def cases(device: str, threads: int, quick: bool, state_dir: str) -> list:
    from bench.harness import Case

    if device.startswith("cuda"):
        grid = [("vit_b16", 256, "bf16", 3, 20)]
    elif quick:
        grid = [("vit_b32", 16, "fp32", 1, 2)]
    else:
        grid = [("vit_b32", 32, "fp32", 2, 3), ("vit_b32", 32, "bf16", 2, 3)]
    out, states = [], {}
    for row in grid:
        name, batch, precision = row[:3]
        if name not in states:
            path = os.path.join(state_dir, f"{name}.safetensors")
            states[name] = step.write_reference_state(step.model_config(name), path)
        spec = step.step_spec(row, device, threads, states[name], rate=RATE)
        out.append(
            Case(
                name=f"patch dropout {RATE} {name} b{batch} {precision}",
                module="bench.bench_patch_dropout",
                spec=spec,
                gate_rtol=1e-4 if precision == "fp32" else 2e-2,
                also=((f"step time at {RATE} / at 0.0", "step_time_ratio", "x"),),
            )
        )
    return out


def main() -> int | None:
    from bench.entry import benchmark_main

    return benchmark_main("patch_dropout", __doc__, worker)


if __name__ == "__main__":
    sys.exit(main())

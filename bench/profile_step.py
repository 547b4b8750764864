"""Where a training step's time goes, side by side: a per-op clock (bench.op_timer) or torch.profiler over
the benchmark's own step loops.

Same set-up as `bench_train_step` (same weights, batches, Trainer path for cliplab); the timed steps run
under the clock or the profiler, so this is a breakdown, not a timing. Self CPU time per step by op category, the
FLOP/s the matmuls reach inside the step, and the MFU ceiling that leaves: model FLOPs over the matmul
time alone, against the matmul peak measured here (what MFU would read if nothing but matmuls took time).

    python -m bench.profile_step                                    # tiny b128 fp32, both sides
    python -m bench.profile_step --precision bf16 --timer profiler  # torch.profiler's self times instead
    python -m bench.profile_step --model vit_b32 --batch 32 --precision bf16 --warmup 2 --steps 2
    python -m bench.profile_step --precision bf16-true --sides cliplab   # no autocast: every tensor in bf16

With the per-op clock it also lists the costliest matmul shapes, each timed again alone with its operands in
cache and evicted (bench.matmul_shapes): how far the step's matmuls fall short of what the same calls reach.
"""

import argparse
import tempfile


def main(argv: list[str] | None = None) -> None:
    import torch

    from bench.bench_train_step import model_config, train_flops_per_sample, write_reference_state
    from bench.harness import matmul_peak, run_process

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "bf16-true"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--sides", default="cliplab,open_clip")
    parser.add_argument(
        "--timer",
        default="ops",
        choices=["ops", "profiler"],
        help="ops: a clock around each aten op (bench.op_timer; its times add up to about the unprofiled "
        "step); profiler: torch.profiler (self CPU time; on some hosts it slows some ops several-fold)",
    )
    parser.add_argument("--shapes", type=int, default=8, help="matmul shapes to list and time alone (ops)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model_cfg = model_config(args.model)
    flops = train_flops_per_sample(model_cfg) * args.batch
    dtype = torch.float32 if args.precision == "fp32" else torch.bfloat16
    peak = matmul_peak(dtype)  # and again at the end: the better one is the ceiling, as in the harness
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        state = write_reference_state(model_cfg, f"{tmp}/state.safetensors")
        for side in args.sides.split(","):
            spec = dict(
                model=args.model,
                batch=args.batch,
                precision=args.precision,
                warmup=args.warmup,
                steps=args.steps,
                device="cpu",
                threads=args.threads,
                seed=0,
                state_path=state,
                side=side,
                profile="ops" if args.timer == "ops" else True,
            )
            results[side] = run_process("bench.bench_train_step", spec)
    peak = max(peak, matmul_peak(dtype))
    print(f"{args.model} b{args.batch} {args.precision}: {flops / 1e9:.1f} model GFLOP per step, ", end="")
    print(f"matmul peak here {peak / 1e9:.1f} GFLOP/s, {args.threads} threads\n")
    for side, out in results.items():
        report(side, out, flops, peak)
        if out["profile"].get("matmul_shapes") and args.shapes:
            report_shapes(out["profile"]["matmul_shapes"][: args.shapes], peak)


def report(side: str, out: dict, flops: float, peak: float) -> None:
    prof = out["profile"]
    step_ms = out["step_s"] * 1e3
    ms = dict(sorted(prof["ms_per_step"].items(), key=lambda kv: -kv[1]))
    ms["not in any op (Python)"] = max(step_ms - sum(ms.values()), 0.0)
    print(f"## {side}: {step_ms:.0f} ms per timed step")
    print("| category | ms / step | share |\n|---|---|---|")
    for category, value in ms.items():
        print(f"| {category} | {value:.1f} | {100 * value / step_ms:.0f} % |")
    matmul_ms, rate = ms.get("matmul", 0.0), prof["matmul_flops_per_s"]
    if matmul_ms and rate:
        print(
            f"\nmatmuls inside the step: {rate / 1e9:.0f} GFLOP/s ({100 * rate / peak:.0f} % of peak); ",
            end="",
        )
        print(f"MFU ceiling with zero time outside matmuls: {100 * flops / (matmul_ms / 1e3) / peak:.0f} %")
    print(
        "costliest other ops (ms / step): "
        + ", ".join(f"{k} {v:.1f}" for k, v in prof["top_other_ops_ms"].items())
    )
    print()


def report_shapes(shapes: list[dict], peak: float) -> None:
    from bench.matmul_shapes import time_alone
    from bench.op_timer import MatmulShape

    print(
        "| matmul (costliest in the step) | calls / step | ms / step | GFLOP/s in step | alone, warm | alone, cold |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in shapes:
        alone = time_alone(MatmulShape(**row["shape"]))
        print(
            f"| {row['label']} | {row['calls_per_step']:.0f} | {row['ms_per_step']:.1f} "
            f"| {row['flops_per_s'] / 1e9:.0f} | {alone['warm'] / 1e9:.0f} | {alone['cold'] / 1e9:.0f} |"
        )
    print(f"(matmul peak here: {peak / 1e9:.0f} GFLOP/s)\n")


if __name__ == "__main__":
    main()

"""What locking towers (LiT, `model.lock_image` / `model.lock_text`) saves: trainable parameters, optimizer state,
training-step time and the resident-memory rise of the step, cliplab alone (locked vs unlocked, same weights
and batches). Not a table row of `python -m bench` (there is no open_clip side to compare with); each setting
runs in a fresh process through `bench_train_step`'s Trainer path.

    python -m bench.lit_savings                          # tiny b128 and ViT-B/32 b32, fp32
    python -m bench.lit_savings --models tiny --steps 4  # one model, more timed steps
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch

from bench import bench_train_step as step

LOCKS = {
    "unlocked": {},
    "image locked (LiT)": {"lock_image": {"unlocked_groups": 0, "freeze_bn_stats": True}},
    "image locked but its projection": {"lock_image": {"unlocked_groups": 1}},
    "text locked": {"lock_text": {"unlocked_layers": 0}},
}
GRID = {"tiny": 128, "vit_b32": 32}


def worker(spec: dict) -> dict:
    import pytorch_lightning as pl

    from cliplab.lit.module import CLIPModule

    torch.set_num_threads(spec["threads"])
    model_cfg = {**step.model_config(spec["model"]), **LOCKS[spec["lock"]]}
    captured = {}
    build_optimizer = CLIPModule.configure_optimizers

    def keep_optimizer(self):  # the optimizer run_cliplab's Trainer steps, to weigh its state afterwards
        captured["optimizer"] = build_optimizer(self)
        return captured["optimizer"]

    CLIPModule.configure_optimizers = keep_optimizer
    batches = step.make_batches(model_cfg, spec["batch"], 2, seed=0)
    pl.seed_everything(0, verbose=False)
    result = step.run_cliplab(spec, model_cfg, batches)
    optimizer = captured["optimizer"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return {
        "step_s": result["step_s"],
        "samples_per_s": result["samples_per_s"],
        "step_rss_rise_bytes": result["step_rss_rise_bytes"],
        "peak_rss_bytes": result["peak_rss_bytes"],
        "trainable_params": sum(p.numel() for p in params),
        "optimizer_state_bytes": sum(t.numel() * t.element_size() for t in state),
    }


def run(spec: dict) -> dict:
    cmd = [sys.executable, "-m", "bench.lit_savings", "--worker", json.dumps(spec)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(lines[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(GRID))
    parser.add_argument("--locks", default="unlocked,image locked (LiT)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--reps", type=int, default=1, help="process runs per setting (median step time)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    print("| model | setting | trainable params | AdamW state | step s | step RSS rise | step time saved |")
    print("|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="cliplab-lit-") as state_dir:
        for model in args.models.split(","):
            path = os.path.join(state_dir, f"{model}.safetensors")
            step.write_reference_state(step.model_config(model), path)
            base = None
            for lock in args.locks.split(","):
                spec = dict(model=model, batch=GRID[model], precision="fp32", warmup=args.warmup,
                            steps=args.steps, device="cpu", threads=args.threads, state_path=path, lock=lock)  # fmt: skip
                runs = [run(spec) for _ in range(args.reps)]
                out = {**runs[0], "step_s": statistics.median(r["step_s"] for r in runs)}
                base = base or out
                saved = 1 - out["step_s"] / base["step_s"]
                rise = out["step_rss_rise_bytes"]
                print(
                    f"| {model} b{GRID[model]} | {lock} | {out['trainable_params'] / 1e6:.2f} M "
                    f"| {out['optimizer_state_bytes'] / 2**20:.0f} MiB | {out['step_s']:.3f} "
                    f"| {'-' if rise is None else f'{rise / 2**20:.0f} MiB'} | {100 * saved:.0f} % |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What LoRA saves: trainable parameters, optimizer state bytes, peak RSS and step time, full vs LoRA.

`python -m bench.lora_memory [--models tiny vit_b32] [--steps 3]`: each (model, mode) case runs in a fresh
process, one after the other (never in parallel), building the CLIPModule from the real configs
(`model=<m> lora=none|default`), with fused AdamW as training uses, fp32, batches of random data. Peak RSS
is the process's high-water mark (`ru_maxrss`) after the steps, so it includes the model and the Python
runtime; the optimizer state is counted from the tensors AdamW holds.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

BATCH = {"tiny": 64, "vit_b32": 16}


def _case(model: str, mode: str, steps: int) -> dict:
    import torch
    from omegaconf import OmegaConf

    from tests.conftest import compose_config

    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = compose_config([f"model={model}", f"lora={mode}", "logger=none"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    from cliplab.lit.module import CLIPModule

    module = CLIPModule(
        resolved["model"], resolved["loss"], resolved["optim"], scheduler=None, lora=resolved["lora"]
    )
    module.configure_model()
    optimizer = module.configure_optimizers()
    size, batch = cfg.model.image_size, BATCH[model]
    images = torch.randn(batch, 3, size, size)
    tokens = torch.randint(1, 49000, (batch, cfg.model.context_length))
    tokens[:, -1] = 49407  # EOT
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        out = module.model(images, tokens)
        loss = module.loss_fn(
            out["image_features"], out["text_features"], out["logit_scale"], out["logit_bias"]
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    state_bytes = sum(
        t.numel() * t.element_size()
        for s in optimizer.state.values()
        for t in s.values()
        if torch.is_tensor(t)
    )
    return {
        "model": model,
        "mode": mode,
        "batch": batch,
        "params": sum(p.numel() for p in module.model.parameters()),
        "trainable": sum(p.numel() for p in module.model.parameters() if p.requires_grad),
        "optimizer_state_mb": state_bytes / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "step_s": sorted(times[1:] or times)[len(times[1:] or times) // 2],  # median after the first
    }


def _table(rows: list[dict]) -> str:
    lines = [
        "| model | mode | batch | trainable params | optimizer state | peak RSS | step (median) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {'LoRA' if r['mode'] == 'default' else 'full'} | {r['batch']} | "
            f"{r['trainable'] / 1e6:.3f} M of {r['params'] / 1e6:.1f} M | {r['optimizer_state_mb']:.1f} MB | "
            f"{r['peak_rss_mb']:.0f} MB | {r['step_s']:.2f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "vit_b32"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)  # model mode: run one case here
    args = parser.parse_args()
    if args.case:
        print(json.dumps(_case(*args.case, args.steps)))
        return
    rows = []
    for model in args.models:
        for mode in ("none", "default"):
            cmd = [
                sys.executable,
                "-m",
                "bench.lora_memory",
                "--case",
                model,
                mode,
                "--steps",
                str(args.steps),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(_table(rows))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

"""Learning parity: does cliplab train the default model as well as open_clip trains it?

Both sides start from the same initial weights (open_clip's seeded init, written once by the parent), read
the same batches (the default training shards, conf/train.yaml's data, through cliplab's `CLIPDataModule`,
one loader worker, the same seed: the data are not what is compared) and follow the same recipe (AdamW with conf/optim's
hyper-parameters and open_clip's decay groups, linear warm-up then cosine decay over the run, the
temperature clamped at 100). cliplab: `pytorch_lightning.Trainer` + `CLIPModule` built from conf/, the
path `python src/train.py` takes. open_clip: its `CLIP` (the same architecture through cliplab's exporter),
`ClipLoss`, `open_clip_train.scheduler.cosine_lr` and the loop of `open_clip_train.train` reduced to its
compute. fp32 on both sides, so the two runs differ only by the order of floating-point operations.

Reported: the training loss of both at every logged step (largest relative gap, and where), then the
held-out zero-shot accuracy of both final models (the held-out artist split, scored by the same cliplab
evaluator), with the binomial noise of that many images. `--wall` adds the same at equal wall-clock: each
side trains for as many steps as it managed in the same time budget (its measured speed), so the faster
side is ahead by its speed ratio.

    python -m bench.bench_learning                   # 300 steps, writes bench/results/learning-latest.md
    python -m bench.bench_learning --steps 60 --wall 120
    make bench ARGS=learning
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_train_step import (
    CONF_DIR,
    bench_trainer,
    compose_group,
    load_reference_state,
    model_config,
    openclip_adamw,
    openclip_reference_model,
    openclip_step,
    write_reference_state,
)
from bench.entry import benchmark_main

RESULTS = Path(__file__).resolve().parent / "results"
LOG_EVERY = 10  # conf/trainer/default.yaml's log_every_n_steps: the steps a user's loss curve shows
LOSS_RTOL = 0.02  # fp32 trajectories drift apart through rounding alone; stated, measured in the report


# ---------------------------------------------------------------------------------------------- shared
def train_config(seed: int):
    """The run's config as `python src/train.py trainer.precision=32-true` composes it (default data, optim,
    scheduler): this benchmark trains in fp32, so it takes the fp32 default recipe (batch 128) on any host."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        # no Hydra run directory here: data-fault records go nowhere (they are counted all the same)
        overrides = [f"seed={seed}", "data.fault_dir=null", "trainer.precision=32-true"]
        return compose("train", overrides=overrides)


def training_batches(cfg, tokenizer):
    """An endless iterator over the default training stream, epoch after epoch, as the Trainer reads it."""
    from hydra.utils import instantiate

    datamodule = instantiate(
        cfg.data, tokenizer=tokenizer, num_workers=1, persistent_workers=False, trim_padding=False
    )
    datamodule.setup("fit")
    return datamodule, datamodule.train_dataloader()


def default_module(model_cfg: dict, scheduler: bool = False):
    """`CLIPModule` with the default loss, optimizer (and schedule), as `python src/train.py` builds it."""
    from cliplab.lit.module import CLIPModule

    return CLIPModule(
        model=model_cfg,
        loss=compose_group("loss", "clip"),
        optim=compose_group("optim", "adamw"),
        scheduler=compose_group("scheduler", "cosine") if scheduler else None,
    )


def tokenizer_of(model_cfg: dict):
    return default_module(model_cfg).tokenizer


def warmup_steps(steps: int) -> int:
    """conf/scheduler/cosine.yaml's warm-up fraction of the run, in steps, for open_clip's scheduler."""
    from cliplab.lit.schedules import warmup_step_count

    return warmup_step_count(compose_group("scheduler", "cosine")["warmup"], steps)


class Trace:
    """Loss and learning rate of every step, and the steps per second after the first one."""

    def __init__(self):
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.start = self.end = None

    def record(self, loss: torch.Tensor, lr: float) -> None:
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        self.losses.append(float(loss.detach()))
        self.lrs.append(float(lr))
        self.end = now

    def result(self) -> dict:
        # steps after the first (start-up, first batch) over the time they took
        timed = len(self.losses) - 1
        rate = timed / (self.end - self.start) if timed > 0 and self.end > self.start else None
        return {"losses": self.losses, "lrs": self.lrs, "steps_per_s": rate}


# ---------------------------------------------------------------------------------------------- sides
def run_cliplab(spec: dict, model_cfg: dict, loader) -> dict:
    import pytorch_lightning as pl
    from safetensors.torch import save_file

    from cliplab.models.interop import load_openclip_state_dict

    module = default_module(model_cfg, scheduler=True)
    module.configure_model()  # idempotent: fit will not rebuild it, so the loaded weights stay
    load_openclip_state_dict(module.model, load_reference_state(spec["state_path"]))
    trace = Trace()

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.lr = trainer.optimizers[0].param_groups[0]["lr"]  # the rate this step uses

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            trace.record(outputs["loss"], self.lr)

    trainer = bench_trainer("cpu", "32-true", max_steps=spec["steps"], max_epochs=-1, callbacks=[Record()])
    trainer.fit(module, train_dataloaders=loader)
    save_file({k: v.contiguous() for k, v in module.model.state_dict().items()}, spec["out"])
    return {**trace.result(), "layout": "cliplab"}


def run_open_clip(spec: dict, model_cfg: dict, loader) -> dict:
    from open_clip.loss import ClipLoss
    from open_clip_train.scheduler import cosine_lr
    from safetensors.torch import save_file

    model = openclip_reference_model(spec["state_path"], model_cfg)
    optim = compose_group("optim", "adamw")
    optimizer = openclip_adamw(model, optim)
    steps = spec["steps"]
    scheduler = cosine_lr(optimizer, optim["lr"], warmup_steps(steps), steps)
    loss_fn = ClipLoss()
    trace = Trace()
    step = 0
    while step < steps:
        for images, tokens in loader:
            lr = scheduler(step)
            trace.record(openclip_step(model, loss_fn, optimizer, images, tokens), lr)
            step += 1
            if step == steps:
                break
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, spec["out"])
    return {**trace.result(), "layout": "open_clip"}


def worker(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    cfg = train_config(spec["seed"])
    model_cfg = model_config(spec["model"])
    torch.manual_seed(spec["seed"])
    # both sides read the same stream: cliplab's loader, same seed, one worker (the data are not compared)
    _, loader = training_batches(cfg, tokenizer_of(model_cfg))
    run = run_cliplab if spec["side"] == "cliplab" else run_open_clip
    return {**run(spec, model_cfg, loader), "side": spec["side"], "steps": spec["steps"]}


# ---------------------------------------------------------------------------------------------- scoring
def held_out_zeroshot(weights: str, layout: str, model_name: str, seed: int) -> dict:
    """top-1 of the final weights on the held-out artist split, scored by cliplab's evaluator."""
    from hydra.utils import instantiate
    from safetensors.torch import load_file

    from cliplab.data import transforms as T
    from cliplab.eval.run import evaluate_zeroshot
    from cliplab.models.interop import load_openclip_state_dict

    cfg = train_config(seed)
    model_cfg = model_config(model_name)
    module = default_module(model_cfg)
    module.configure_model()
    state = load_file(weights)
    if layout == "open_clip":
        load_openclip_state_dict(module.model, state)
    else:
        module.model.load_state_dict(state)
    benchmark = instantiate(cfg.evals.emoji.benchmark)
    transform = T.eval_transform(model_cfg["image_size"])
    return evaluate_zeroshot(module.model, module.tokenizer, benchmark, transform)


def loss_gap(ours: list[float], theirs: list[float], every: int) -> tuple[float, int]:
    """Largest relative gap between the two loss curves at the logged steps, and the step where it is."""
    gaps = [(abs(a - b) / abs(b), i) for i, (a, b) in enumerate(zip(ours, theirs)) if i % every == 0]
    return max(gaps) if gaps else (0.0, 0)


def noise(top1: float, n: int) -> float:
    """Two standard errors of the difference of two independent accuracies near `top1` on `n` images
    (at least one image's worth of accuracy: near 0 % the binomial error is no measure of it)."""
    p = min(max(top1, 1 / n), 1 - 1 / n)
    return 2 * math.sqrt(2 * p * (1 - p) / n)


def compare(runs: dict, scores: dict, every: int) -> dict:
    gap, where = loss_gap(runs["cliplab"]["losses"], runs["open_clip"]["losses"], every)
    top1 = {side: scores[side]["top1"] for side in runs}
    n = scores["cliplab"]["n_images"]
    band = noise(sum(top1.values()) / 2, n)
    return {
        "loss_gap": gap,
        "loss_gap_step": where,
        "loss_ok": gap <= LOSS_RTOL,
        "top1": top1,
        "top1_noise": band,
        "top1_ok": abs(top1["cliplab"] - top1["open_clip"]) <= band,
        "n_images": n,
    }


# ---------------------------------------------------------------------------------------------- driver
def train_both(base: dict, state_dir: str, steps: dict[str, int], log=print) -> tuple[dict, dict]:
    from bench.harness import run_process

    runs, scores = {}, {}
    for side in ("cliplab", "open_clip"):
        out = os.path.join(state_dir, f"{side}-{steps[side]}.safetensors")
        log(f"  {side}: {steps[side]} steps ...")
        runs[side] = run_process(
            "bench.bench_learning", {**base, "side": side, "steps": steps[side], "out": out}
        )
        scores[side] = held_out_zeroshot(out, runs[side]["layout"], base["model"], base["seed"])
        rate = runs[side]["steps_per_s"]
        log(
            f"  {side}: final loss {runs[side]['losses'][-1]:.4f}, {rate:.2f} steps/s, top-1 {scores[side]['top1']:.4f}"
        )
    return runs, scores


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for side, run in runs.items():
        ax.plot(range(1, len(run["losses"]) + 1), run["losses"], label=side, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Learning parity: same weights, batches and recipe (fp32)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(equal_steps: dict, wall: dict | None, info: dict) -> str:
    c = equal_steps["compare"]
    runs = equal_steps["runs"]
    lines = [
        "# Learning parity: cliplab vs a loop built from open_clip's components",
        "",
        f"{info['steps']} steps of `model={info['model']}` on the default data (`{info['data']}`), batch {info['batch']}, fp32, "
        f"{info['threads']} threads, torch {torch.__version__}. Same initial weights, same batches, same recipe.",
        "",
        "| | cliplab | open_clip |",
        "|---|---:|---:|",
        f"| loss at step 1 | {runs['cliplab']['losses'][0]:.4f} | {runs['open_clip']['losses'][0]:.4f} |",
        f"| final training loss | {runs['cliplab']['losses'][-1]:.4f} | {runs['open_clip']['losses'][-1]:.4f} |",
        f"| held-out artist top-1 ({c['n_images']} images) | {c['top1']['cliplab']:.2%} | {c['top1']['open_clip']:.2%} |",
        f"| steps/s (after the first) | {runs['cliplab']['steps_per_s']:.3f} | {runs['open_clip']['steps_per_s']:.3f} |",
        "",
        f"- Loss curves: largest relative gap {c['loss_gap']:.2e} (at step {c['loss_gap_step'] + 1}), "
        f"tolerance {LOSS_RTOL:.0%}: {'within' if c['loss_ok'] else 'OUTSIDE'}.",
        f"- Held-out top-1 differs by {abs(c['top1']['cliplab'] - c['top1']['open_clip']):.2%}; two standard errors "
        f"of the difference: {c['top1_noise']:.2%}: {'within noise' if c['top1_ok'] else 'OUTSIDE noise'}.",
    ]
    if wall is not None:
        w = wall["runs"]
        lines += [
            "",
            f"## Equal wall-clock ({wall['seconds']:.0f} s of training each, steps from each side's measured speed)",
            "",
            "| | cliplab | open_clip |",
            "|---|---:|---:|",
            f"| steps in the budget | {w['cliplab']['steps']} | {w['open_clip']['steps']} |",
            f"| final training loss | {w['cliplab']['losses'][-1]:.4f} | {w['open_clip']['losses'][-1]:.4f} |",
            f"| held-out artist top-1 | {wall['compare']['top1']['cliplab']:.2%} | {wall['compare']['top1']['open_clip']:.2%} |",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_learning", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--wall", type=float, default=0.0, help="also train both for this many seconds each")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="30 steps: a smoke test")
    args = parser.parse_args(argv)
    steps = 30 if args.quick else args.steps
    threads = args.threads or torch.get_num_threads()
    every = LOG_EVERY
    data = train_config(args.seed).data
    batch = data.batch_size
    data_name = "/".join(Path(str(data.train.urls)).parts[-4:-2])  # <cache>/mix/v2-64px/shards/train
    with tempfile.TemporaryDirectory(prefix="cliplab-learning-") as state_dir:
        state = write_reference_state(
            model_config(args.model), os.path.join(state_dir, "init.safetensors"), args.seed
        )
        base = {"model": args.model, "seed": args.seed, "threads": threads, "state_path": state}
        print(
            f"learning parity: {steps} steps, model {args.model}, batch {batch}, {threads} threads",
            flush=True,
        )
        runs, scores = train_both(base, state_dir, {"cliplab": steps, "open_clip": steps})
        equal = {"runs": runs, "scores": scores, "compare": compare(runs, scores, every)}
        wall = None
        if args.wall > 0:
            budget = {side: max(1, int(args.wall * runs[side]["steps_per_s"])) for side in runs}
            wruns, wscores = train_both(base, state_dir, budget)
            wall = {
                "seconds": args.wall,
                "runs": wruns,
                "scores": wscores,
                "compare": compare(wruns, wscores, every),
            }
    info = {"steps": steps, "model": args.model, "batch": batch, "threads": threads, "data": data_name}
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md = report(equal, wall, info)
    for name in (f"learning-{stamp}", "learning-latest"):
        (RESULTS / f"{name}.md").write_text(md)
        (RESULTS / f"{name}.json").write_text(
            json.dumps({"info": info, "equal_steps": equal, "wall": wall}, indent=1)
        )
    plot(runs, RESULTS / "learning-latest.png")
    print(md)
    print(f"written {RESULTS / 'learning-latest.md'} (and .json, .png)")
    return 0 if equal["compare"]["loss_ok"] and equal["compare"]["top1_ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if "--worker" in sys.argv:
        benchmark_main("learning", __doc__, worker)
    else:
        sys.exit(main())

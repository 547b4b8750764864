"""Training-step throughput: cliplab's real Trainer path vs open_clip's model + ClipLoss + AdamW loop.

cliplab: `pytorch_lightning.Trainer` + `CLIPModule` (model, loss and AdamW from conf/) fed by an in-memory
DataLoader. open_clip: its `CLIP` built from the matching custom config, `ClipLoss`, AdamW with open_clip's
decay rule, the loop of `open_clip_train.train` reduced to its compute (same autocast, same clamp).
Both sides load the same state dict (written once by the parent) and see the same seeded batches, so
the first-step loss must agree before any timing counts.

    python -m bench.bench_train_step --quick          # tiny model only, 5 runs per side
    python -m bench.bench_train_step                  # tiny b128 + ViT-B/32 b32, fp32 and bf16
    python -m bench train_step --levers               # also fused / foreach AdamW (cliplab) and compile (both)
    python -m bench train_step --levers compile       # only the compile rows (also: recompute, nchw)
"""

import math
import os
import re
import sys
import time
from pathlib import Path

import torch

from cliplab.models.flops import train_flops_per_sample  # the count the training module logs

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
LEVERS = ("fused", "foreach", "compile", "recompute", "nchw")  # extra rows of `--levers` (see `cases`)
EOT_TOKEN = 49407


# ---------------------------------------------------------------------------------------------- shared setup
def compose_group(group: str, name: str) -> dict:
    """A resolved config group entry (e.g. `model/tiny`) through Hydra, exactly as a run would see it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={name}"])
    return OmegaConf.to_container(cfg[group], resolve=True)


def model_config(
    name: str,
    grad_checkpointing: bool = False,
    selective_recompute: bool | None = None,
    checkpoint_chunks: int | None = None,
    channels_last: bool | None = None,
) -> dict:
    cfg = compose_group("model", name)
    # open_clip's CLIP ViT pools at the class token (the default tiny model mean-pools): the benchmark
    # model must be expressible on both sides to share weights, so it pools at the token.
    if cfg["image_tower"].get("pool") == "avg":
        cfg["image_tower"]["pool"] = "token"
    for tower in ("image_tower", "text_tower"):
        cfg[tower]["grad_checkpointing"] = grad_checkpointing
        if selective_recompute is not None:  # cliplab-only memory lever (None: the config's default)
            cfg[tower]["selective_recompute"] = selective_recompute
        if checkpoint_chunks is not None:  # cliplab-only too: recompute checkpointed blocks in batch slices
            cfg[tower]["checkpoint_chunks"] = checkpoint_chunks
    if channels_last is not None:  # cliplab-only: NHWC convolutions (the CLIP ResNet configs' default)
        cfg["image_tower"]["channels_last"] = channels_last
    return cfg


def openclip_config(model_cfg: dict) -> dict:
    """open_clip's custom model config for the same architecture (derived by cliplab's exporter)."""
    from cliplab.models.interop import build_clip
    from cliplab.models.interop.openclip_export import openclip_model_cfg

    with torch.device("meta"):
        cfg = openclip_model_cfg(build_clip(model_cfg))
    rate = model_cfg["image_tower"].get("patch_dropout")
    if rate:  # FLIP (bench_patch_dropout): open_clip's own patch dropout, set in its vision config
        cfg["vision_cfg"]["patch_dropout"] = rate
    return cfg


def write_reference_state(model_cfg: dict, path: str, seed: int = 0) -> str:
    """open_clip's freshly initialised weights (seeded): the initial state of both sides."""
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = CLIP(**openclip_config(model_cfg))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def load_reference_state(path: str) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def make_batches(model_cfg: dict, batch: int, count: int, seed: int = 0) -> list[tuple]:
    """Seeded normalised-image-like tensors and token rows ending in EOT then padding, as a tokenizer gives."""
    gen = torch.Generator().manual_seed(seed)
    size, length = model_cfg["image_size"], model_cfg["context_length"]
    out = []
    for _ in range(count):
        images = torch.randn(batch, 3, size, size, generator=gen)
        tokens = torch.randint(1, EOT_TOKEN - 1, (batch, length), generator=gen)
        ends = torch.randint(2, length, (batch,), generator=gen)
        positions = torch.arange(length)
        tokens[positions[None] == ends[:, None]] = EOT_TOKEN
        tokens[positions[None] > ends[:, None]] = 0
        tokens[:, 0] = 49406  # start of text
        out.append((images, tokens))
    return out


# What a timed Trainer leaves out: nothing is logged, saved, drawn, summarised or validated.
QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
NO_VALIDATION = dict(num_sanity_val_steps=0, limit_val_batches=0)


def bench_trainer(device: str, precision: str, **fit_options):
    """A Lightning Trainer that only trains, on one device."""
    import pytorch_lightning as pl

    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    return pl.Trainer(
        accelerator=accelerator, devices=1, precision=precision, **QUIET, **NO_VALIDATION, **fit_options
    )


class InMemoryBatches(torch.utils.data.Dataset):
    """`steps` batches cycling over a few precomputed ones (DataLoader with batch_size=None)."""

    def __init__(self, batches: list[tuple], steps: int):
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> tuple:
        return self.batches[i % len(self.batches)]


# ---------------------------------------------------------------------------------------------- memory
def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+)", f.read(), re.M).group(1))


def reset_peak_rss() -> int | None:
    """Resets the kernel's resident high-water mark; returns the current RSS in bytes (None off Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return None


def peak_rss() -> int | None:
    try:
        return _status_kib("VmHWM") * 1024
    except (OSError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------- timing
class StepClock:
    """Marks the start of the timed steps and the end of the last; records the first-step loss."""

    def __init__(self, warmup: int, total: int, device: str, profile: bool | str = False):
        self.warmup, self.total = warmup, total
        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        self.first_loss = None
        self.t_begin = self.t_timed = self.t_end = None
        self.rss_base = None
        # bench.profile_step: the timed steps run under torch.profiler (slower; a breakdown, not a timing),
        # or with profile="ops" under bench.op_timer's per-op clock (CPU only, close to the unprofiled step)
        self.profiler = None
        if profile == "ops":
            from bench.op_timer import OpTimer

            self.profiler = OpTimer()
        elif profile:
            self.profiler = torch.profiler.profile(with_flops=True)

    def begin(self) -> None:
        self.t_begin = time.perf_counter()

    def before_step(self, i: int) -> None:
        if i == self.warmup:
            self.sync()
            self.rss_base = reset_peak_rss()
            if self.profiler is not None:
                self.profiler.start()
            self.t_timed = time.perf_counter()

    def after_step(self, i: int, loss: torch.Tensor) -> None:
        if i == 0:
            self.first_loss = float(loss.detach().float())  # one sync, during warm-up only
        if i == self.total - 1:
            self.sync()
            self.t_end = time.perf_counter()
            if self.profiler is not None:
                self.profiler.stop()

    def result(self, batch: int) -> dict:
        steps = self.total - self.warmup
        step_s = (self.t_end - self.t_timed) / steps
        peak = peak_rss()
        cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else None
        profile = None
        if self.profiler is not None:  # bench.profile_step only: its module is not imported otherwise
            from bench.op_breakdown import op_breakdown

            profile = op_breakdown(self.profiler, steps)
        return {
            "profile": profile,
            "peak_cuda_bytes": cuda,
            "first_loss": self.first_loss,
            "samples_per_s": batch / step_s,
            "step_s": step_s,
            "warmup_s": self.t_timed - self.t_begin,
            "peak_rss_bytes": peak,
            "step_rss_rise_bytes": None if self.rss_base is None or peak is None else peak - self.rss_base,
        }


# ---------------------------------------------------------------------------------------------- sides
# bf16-true (profile_step only): weights, activations and optimizer state all in bf16, no autocast casts; the
# ceiling of keeping the residual stream in bf16, not a recipe (AdamW on bf16 weights loses small updates).
LIGHTNING_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "bf16-true": "bf16-true"}


def run_cliplab(spec: dict, model_cfg: dict, batches: list[tuple]) -> dict:
    import pytorch_lightning as pl

    from cliplab.lit.module import CLIPModule
    from cliplab.models.interop import load_openclip_state_dict
    from cliplab.utils.host_memory import keep_freed_memory

    if not spec.get("return_freed_memory"):  # the memory rows measure live tensors: allocator as set
        keep_freed_memory()  # what cliplab.pipeline.train does (keep_freed_host_memory: true)

    optim = compose_group("optim", spec.get("optim", "adamw"))
    optim.update(spec.get("optim_overrides", {}))
    module = CLIPModule(
        model=model_cfg, loss=compose_group("loss", "clip"), optim=optim, compile=spec.get("compile", False)
    )
    module.configure_model()  # idempotent: fit will not rebuild it, so the loaded weights stay
    load_openclip_state_dict(module.model, load_reference_state(spec["state_path"]))
    clock = StepClock(
        spec["warmup"], spec["warmup"] + spec["steps"], spec["device"], spec.get("profile", False)
    )
    if spec.get("profile"):  # Lightning looks its hooks up on the instance: mark the model's own work
        from bench.op_breakdown import in_model_range

        module.training_step = in_model_range(module.training_step)
        module.backward = in_model_range(module.backward)

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            clock.before_step(batch_idx)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock.after_step(batch_idx, outputs["loss"])

    trainer = bench_trainer(
        spec["device"], LIGHTNING_PRECISION[spec["precision"]], max_steps=clock.total, callbacks=[Clock()]
    )
    loader = torch.utils.data.DataLoader(InMemoryBatches(batches, clock.total), batch_size=None)
    clock.begin()
    trainer.fit(module, train_dataloaders=loader)
    return clock.result(spec["batch"])


def openclip_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip_train.main's rule: no decay for gains, biases, norms and the temperature."""
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": weight_decay},
    ]


def openclip_reference_model(state_path: str, model_cfg: dict) -> torch.nn.Module:
    """open_clip's CLIP (feature dict outputs) with the reference weights at `state_path`, in train mode."""
    from open_clip.model import CLIP

    model = CLIP(**openclip_config(model_cfg), output_dict=True)
    model.load_state_dict(load_reference_state(state_path))
    return model.train()


def openclip_adamw(model: torch.nn.Module, optim: dict) -> torch.optim.AdamW:
    """AdamW as open_clip_train builds it, with the settings of a cliplab optim config."""
    groups = openclip_param_groups(model, optim["weight_decay"])
    return torch.optim.AdamW(groups, lr=optim["lr"], betas=tuple(optim["betas"]), eps=optim["eps"])


def openclip_step(model, loss_fn, optimizer, images, tokens, bf16: bool = False) -> torch.Tensor:
    """One step of `open_clip_train.train` reduced to its compute: autocast, loss, backward, AdamW, clamp."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(images, tokens)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return loss


def run_open_clip(spec: dict, model_cfg: dict, batches: list[tuple]) -> dict:
    from open_clip.loss import ClipLoss

    device = torch.device(spec["device"])
    model = openclip_reference_model(spec["state_path"], model_cfg).to(device)
    if spec["precision"] == "bf16-true":  # what Lightning's bf16-true does on the cliplab side
        model = model.to(torch.bfloat16)
        batches = [(images.to(torch.bfloat16), tokens) for images, tokens in batches]
    if model_cfg["image_tower"].get("grad_checkpointing"):
        model.set_grad_checkpointing(True)
    if spec.get("compile"):
        model = torch.compile(model)  # what open_clip_train's --torchcompile does
    optimizer = openclip_adamw(model, compose_group("optim", spec.get("optim", "adamw")))
    loss_fn = ClipLoss()
    bf16 = spec["precision"] == "bf16"
    clock = StepClock(
        spec["warmup"], spec["warmup"] + spec["steps"], spec["device"], spec.get("profile", False)
    )
    loader = torch.utils.data.DataLoader(InMemoryBatches(batches, clock.total), batch_size=None)
    clock.begin()
    for i, (images, tokens) in enumerate(loader):
        clock.before_step(i)
        images, tokens = images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)
        loss = openclip_step(model, loss_fn, optimizer, images, tokens, bf16)
        clock.after_step(i, loss)
    return clock.result(spec["batch"])


def worker(spec: dict) -> dict:
    if spec.get("return_freed_memory"):
        # glibc keeps freed tensors below its self-raising (up to 32 MiB) mmap threshold in the heap, so RSS
        # would reflect earlier steps' allocation pattern rather than live memory.
        from cliplab.utils.host_memory import return_freed_memory

        return_freed_memory()
    torch.set_num_threads(spec["threads"])
    model_cfg = model_config(
        spec["model"],
        spec.get("grad_checkpointing", False),
        spec.get("selective_recompute"),
        spec.get("checkpoint_chunks"),
        spec.get("channels_last"),
    )
    batches = make_batches(model_cfg, spec["batch"], spec.get("distinct_batches", 2), seed=spec["seed"])
    if spec["device"].startswith("cuda"):  # data in memory means in device memory: no copy in the step
        batches = [tuple(t.to(spec["device"]) for t in b) for b in batches]
    run = run_cliplab if spec["side"] == "cliplab" else run_open_clip
    result = run(spec, model_cfg, batches)
    result.update(side=spec["side"], threads=torch.get_num_threads(), torch=torch.__version__)
    return result


# ---------------------------------------------------------------------------------------------- cases
GRID_FIELDS = ("model", "batch", "precision", "warmup", "steps")  # a row of a benchmark's grid


def step_spec(row: tuple, device: str, threads: int, state_path: str, **extra) -> dict:
    """The worker spec of one grid row; `extra`: the row's levers or the benchmark's own settings."""
    return dict(zip(GRID_FIELDS, row), device=device, threads=threads, seed=0, state_path=state_path, **extra)


def cases(device: str, threads: int, quick: bool, state_dir: str, levers: str = "") -> list:
    """The table rows of this benchmark (reference weights are written into `state_dir`)."""
    from bench.harness import Case

    if device.startswith("cuda"):  # per-GPU batches of real runs (open_clip's LAION B/32 and B/16 runs)
        grid = [("vit_b32", 512, "bf16", 3, 30), ("vit_b16", 256, "bf16", 3, 30)]
    elif quick:
        grid = [("tiny", 128, "fp32", 1, 3)]
    else:
        grid = [
            ("tiny", 128, "fp32", 2, 8),
            ("tiny", 128, "bf16", 2, 8),
            # two warm-up steps: the heap reaches the step's working set in two (host_memory)
            ("vit_b32", 32, "fp32", 2, 3),
            ("vit_b32", 32, "bf16", 2, 3),
            # CLIP ResNets (timm's resnet50_clip vs open_clip's ModifiedResNet): channels-last convolutions
            ("tiny_rn", 128, "fp32", 2, 8),
            ("tiny_rn", 128, "bf16", 2, 8),
            ("rn50", 16, "fp32", 2, 3),
            ("rn50", 16, "bf16", 2, 3),
        ]
    all_levers = {
        "fused": (" +fused AdamW", {"optim_overrides": {"fused": True}}),
        "foreach": (" +foreach AdamW", {"optim_overrides": {"foreach": True}}),
        "compile": (" +compile (both sides)", {"compile": True}),
        "recompute": (" +selective recompute (cliplab)", {"selective_recompute": True}),
        "nchw": (" (cliplab: channels_last=false)", {"channels_last": False}),
    }
    variants = [("", {})] + [all_levers[x] for x in levers.split(",") if x]
    out, flops, states = [], {}, {}
    for name, batch, precision, warmup, steps in grid:
        model_cfg = model_config(name)
        if name not in states:
            states[name] = write_reference_state(model_cfg, os.path.join(state_dir, f"{name}.safetensors"))
            flops[name] = train_flops_per_sample(model_cfg)
        for suffix, extra in variants:
            if "channels_last" in extra and not model_cfg["image_tower"].get("channels_last"):
                continue  # the lever only exists for convolutional towers
            row = (name, batch, precision, warmup + (2 if extra.get("compile") else 0), steps)
            spec = step_spec(row, device, threads, states[name], **extra)
            out.append(
                Case(
                    name=f"train step {name} b{batch} {precision}{suffix}",
                    module="bench.bench_train_step",
                    spec=spec,
                    flops_per_sample=flops[name],
                    peak_key=precision,
                    gate_rtol=1e-4 if precision == "fp32" else 2e-2,
                )
            )
    return out


def main() -> int | None:
    from bench.entry import benchmark_main

    return benchmark_main("train_step", __doc__, worker)


if __name__ == "__main__":
    sys.exit(main())

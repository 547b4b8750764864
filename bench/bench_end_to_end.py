"""End to end: wall time to train N samples (default 4,096) of the tiny model from webdataset shards,
data workers and compute sharing the machine. cliplab: `CLIPDataModule` + `WebDatasetSource` +
Lightning `Trainer` + `CLIPModule`. open_clip: its own loop built from its components
(`open_clip_train.data.get_wds_dataset`, its train transform and tokenizer, `CLIP`, `ClipLoss`, AdamW).

The clock starts before the loader exists (worker start-up and shuffle-buffer fill count) and stops
after the last optimizer step. Both sides load the same initial weights; the shards are seeded
synthetic JPEGs (bench_data's writer). The samples the two loaders draw differ (independent shuffles),
so the gate is looser than the train-step one: the first-step losses agree within 5 %. cliplab trims
each token batch to its longest caption (exact; `CLIPDataModule(trim_padding=True)`, the default): the
second row turns that off.

    python -m bench end_to_end [--quick]
"""

import os
import sys
import time

import torch

from bench import bench_train_step as step

SHORT_SIDE = 128  # stored images larger than the 64 px model input, so decode + crop do real work


def run_cliplab(spec: dict, model_cfg: dict) -> dict:
    import pytorch_lightning as pl

    from cliplab.data.datamodule import CLIPDataModule
    from cliplab.data.webdataset_source import WebDatasetSource
    from cliplab.lit.module import CLIPModule
    from cliplab.models.interop import load_openclip_state_dict
    from cliplab.utils.host_memory import keep_freed_memory

    keep_freed_memory()  # what cliplab.pipeline.train does (keep_freed_host_memory: true)
    module = CLIPModule(
        model=model_cfg, loss=step.compose_group("loss", "clip"), optim=step.compose_group("optim", "adamw")
    )
    module.configure_model()
    load_openclip_state_dict(module.model, step.load_reference_state(spec["state_path"]))
    steps = spec["samples"] // spec["batch"]
    marks: dict = {}

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 0:
                marks["first_loss"] = float(outputs["loss"].detach())
                marks["first"] = time.perf_counter()
            marks["end"] = time.perf_counter()

    start = time.perf_counter()
    datamodule = CLIPDataModule(
        train=WebDatasetSource(spec["pattern"], samples_per_epoch=spec["samples"]),
        batch_size=spec["batch"],
        num_workers=spec["workers"],
        image_size=model_cfg["image_size"],
        tokenizer=module.tokenizer,
        persistent_workers=False,
        trim_padding=spec.get("trim_padding", True),
    )
    trainer = step.bench_trainer(
        spec["device"], "32-true", max_steps=steps, max_epochs=1, callbacks=[Clock()]
    )
    trainer.fit(module, datamodule=datamodule)
    return _result(spec, start, marks, trainer.global_step)


def run_open_clip(spec: dict, model_cfg: dict) -> dict:
    from open_clip.loss import ClipLoss

    from bench.bench_data import open_clip_dataset, open_clip_wds_data

    open_clip_wds_data()  # imported and patched before the clock starts, as it was: the clock times the loader
    device = torch.device(spec["device"])
    model = step.openclip_reference_model(spec["state_path"], model_cfg).to(device)
    optimizer = step.openclip_adamw(model, step.compose_group("optim", "adamw"))
    loss_fn = ClipLoss()
    marks: dict = {}
    steps = 0

    start = time.perf_counter()
    image_size, context = model_cfg["image_size"], model_cfg["context_length"]
    data = open_clip_dataset(
        spec["pattern"], spec["samples"], spec["workers"], spec["batch"], image_size, context
    )
    data.set_epoch(0)
    for i, (images, tokens) in enumerate(data.dataloader):
        images, tokens = images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)
        loss = step.openclip_step(model, loss_fn, optimizer, images, tokens)
        if i == 0:
            marks["first_loss"] = float(loss.detach())
            marks["first"] = time.perf_counter()
        steps += 1
    marks["end"] = time.perf_counter()
    return _result(spec, start, marks, steps)


def _result(spec: dict, start: float, marks: dict, steps: int) -> dict:
    samples = steps * spec["batch"]
    total = marks["end"] - start
    return {
        "first_loss": marks.get("first_loss"),
        "steps": steps,
        "samples": samples,
        "time_s": total,
        "samples_per_s": samples / total,
        "warmup_s": marks["first"] - start,  # loader start-up + first step
    }


def worker(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    model_cfg = step.model_config(spec["model"])
    run = run_cliplab if spec["side"] == "cliplab" else run_open_clip
    result = run(spec, model_cfg)
    result.update(side=spec["side"], threads=torch.get_num_threads())
    return result


def cases(device: str, threads: int, quick: bool, state_dir: str) -> list:
    from bench.bench_data import write_synthetic_shards
    from bench.harness import Case

    samples = 1024 if quick else 4096
    pattern = write_synthetic_shards(os.path.join(state_dir, "shards"), SHORT_SIDE, samples)
    path = os.path.join(state_dir, "tiny.safetensors")
    if not os.path.exists(path):
        step.write_reference_state(step.model_config("tiny"), path)
    workers = 1 if (os.cpu_count() or 1) <= 2 else 4
    spec = dict(
        model="tiny",
        batch=128,
        samples=samples,
        workers=workers,
        pattern=pattern,
        state_path=path,
        device=device,
        threads=threads,
    )
    # Second row: cliplab without trimming token batches to their longest caption (open_clip never trims),
    # so the table shows what the data pipeline and loop gain apart from the skipped padding.
    return [
        Case(
            name=f"end to end tiny {samples} samples, {workers} worker(s){suffix}",
            module="bench.bench_end_to_end",
            spec={**spec, "trim_padding": trim},
            gate_rtol=0.05,
        )
        for trim, suffix in ((True, ""), (False, " (cliplab: trim_padding=false)"))
    ]


def main() -> int | None:
    from bench.entry import benchmark_main

    return benchmark_main("end_to_end", __doc__, worker)


if __name__ == "__main__":
    sys.exit(main())

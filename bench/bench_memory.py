"""Peak resident memory of a training step at batch 512 (tiny model), with and without activation
checkpointing, cliplab vs open_clip. Each run is its own process (bench_train_step's worker): the
kernel's high-water mark is reset after the warm-up step, so the number is the rise over the steady
state (weights, AdamW state, data) during the measured steps: activations, gradients, temporaries.
Both sides run with glibc's mmap threshold fixed at 1 MiB (cliplab.utils.host_memory.return_freed_memory): by
default glibc keeps freed tensors of up to 32 MiB in its heap, so the rise measured how much of the
warm-up step's memory the allocator happened to keep (the bases differed by ~150 MiB between the sides).
Without full checkpointing cliplab runs with `selective_recompute=true` (off by default: it is a memory
lever, it slows GPU steps); with it, cliplab recomputes each block in 8 batch slices (`checkpoint_chunks=8`,
off by default too). The step time is reported beside the memory.

    python -m bench memory [--quick]
"""

import os

from bench.bench_train_step import model_config, write_reference_state

CHECKPOINT_CHUNKS = 8


def cases(device: str, threads: int, quick: bool, state_dir: str) -> list:
    from bench.harness import Case

    if device.startswith("cuda"):
        return []  # RSS is host memory; GPU memory is a different benchmark
    path = os.path.join(state_dir, "tiny.safetensors")
    if not os.path.exists(path):
        write_reference_state(model_config("tiny"), path)
    out = []
    ckpt_name = f" +act ckpt (cliplab: {CHECKPOINT_CHUNKS} slices)"
    for ckpt in (False, True):
        spec = dict(
            model="tiny",
            batch=512,
            precision="fp32",
            warmup=1,
            steps=1 if quick else 2,
            device=device,
            threads=threads,
            seed=0,
            state_path=path,
            grad_checkpointing=ckpt,
            # cliplab's memory setting without full checkpointing: selective recompute (open_clip has none)
            selective_recompute=not ckpt,
            checkpoint_chunks=CHECKPOINT_CHUNKS if ckpt else None,
            distinct_batches=1,
            return_freed_memory=True,  # RSS counts live tensors, not the allocator's leftovers
        )
        out.append(
            Case(
                name=f"peak memory tiny b512 fp32{ckpt_name if ckpt else ' (cliplab: selective recompute)'}",
                module="bench.bench_train_step",
                spec=spec,
                metric="step_rss_rise_bytes",
                higher_is_better=False,
                unit="bytes",
            )
        )
    return out

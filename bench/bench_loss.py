"""The contrastive loss alone: cliplab's ChunkedClipLoss vs open_clip's ClipLoss, forward + backward, fp32.

One row per batch size N for the time of a forward + backward call (median of `reps` calls after a
warm-up call) and one for its peak memory, both from the same process runs. Peak memory is the rise of
the process's resident set during one more call, made after the timed ones with glibc's mmap threshold
at 1 MiB and the heap trimmed (so freed blocks leave the resident set): the kernel's high-water mark
(VmHWM) is reset through /proc/self/clear_refs just before it, and the number is VmHWM after it minus
VmRSS before (the gradients of the inputs and every temporary of the loss included; the features
themselves excluded).
Without a resettable VmHWM (off Linux) the memory row reads "-". Gate: the same loss value from the same
features (world size 1). open_clip holds several N x N logit matrices at once, so above N = 16384 it does
not fit a 24 GiB machine; the chunked loss keeps only blocks of them.

    python -m bench loss [--quick]
"""

import statistics
import sys
import time

import torch
import torch.nn.functional as F

from bench.bench_train_step import peak_rss, reset_peak_rss

EMBED_DIM = 512
BLOCK_SIZE = 1024


def make_loss(side: str):
    if side == "open_clip":
        from open_clip.loss import ClipLoss

        return ClipLoss()
    from cliplab.losses import ChunkedClipLoss

    return ChunkedClipLoss(block_size=BLOCK_SIZE)


def worker(spec: dict) -> dict:
    from cliplab.utils.host_memory import return_freed_memory

    torch.set_num_threads(spec["threads"])
    n = spec["n"]
    gen = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(n, EMBED_DIM, generator=gen), dim=-1)
    text = F.normalize(torch.randn(n, EMBED_DIM, generator=gen) + image, dim=-1)
    scale = torch.tensor(1 / 0.07)
    loss_fn = make_loss(spec["side"])

    def call() -> float:
        leaves = [t.clone().requires_grad_() for t in (image, text, scale)]
        loss = loss_fn(*leaves)
        loss.backward()
        return loss.item()

    start = time.perf_counter()
    first_loss = call()  # warm-up: kernel selection, allocator growth
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(spec["reps"]):  # timed with the allocator as it comes, as a training run has it
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    # Then one call for memory: blocks over 1 MiB get their own mappings and the heap hands back what it
    # kept, so the resident set follows live tensors (the heap's leftovers hid small losses' temporaries).
    return_freed_memory()
    rss_before = reset_peak_rss()  # the resident high-water mark restarts here (None off Linux)
    call()
    peak = peak_rss()
    return {
        "time_s": statistics.median(times),
        "times_s": times,
        "peak_bytes": None if rss_before is None or peak is None else peak - rss_before,
        "first_loss": first_loss,
        "warmup_s": warmup_s,
    }


def cases(device: str, threads: int, quick: bool, state_dir: str) -> list:
    from bench.harness import Case

    if device.startswith("cuda"):
        return []  # resident-set memory and CPU timing: a CPU benchmark
    sizes = (1024, 2048) if quick else (4096, 8192, 16384)
    return [
        Case(
            name=f"contrastive loss N={n} fp32 fwd+bwd (cliplab: chunked, block {BLOCK_SIZE})",
            module="bench.bench_loss",
            spec=dict(n=n, reps=2 if quick else 3, threads=threads),
            metric="time_s",
            higher_is_better=False,
            unit="s",
            gate_rtol=1e-5,
            also=(("peak memory", "peak_bytes", "bytes"),),
        )
        for n in sizes
    ]


if __name__ == "__main__":
    from bench.entry import benchmark_main

    sys.exit(benchmark_main("loss", __doc__, worker))

"""Attention forward + backward on this machine: PyTorch's fused kernel against the explicit softmax path,
over the sequence lengths of the CLIP towers (what `cliplab.models.attention`'s CPU rule rests on).

    python -m bench.bench_attention                # fp32 and bf16, 17-577 tokens
    python -m bench.bench_attention --device cuda

Prints one row per shape and dtype: milliseconds per call of each path (median of --reps) and which path
the rule takes. Heads are 64 wide; batch x heads shrinks as the sequence grows, as in the towers.
"""

import argparse
import functools
import statistics
import time

import torch
import torch.nn.functional as F

from cliplab.models import attention as attention_mod

# (name, batch, heads, tokens, causal): the small model's towers at batch 128, then the B/32 image and text
# towers, B/16, L/14 and L/14@336 (image) at small CPU batches
SHAPES = (
    ("tiny image", 128, 4, 17, False),
    ("tiny text", 128, 4, 32, True),
    ("B/32 image", 32, 12, 50, False),
    ("B/32 text", 32, 8, 77, True),
    ("B/16 image", 16, 12, 197, False),
    ("L/14 image", 8, 16, 257, False),
    ("L/14@336 image", 4, 16, 577, False),
)


def explicit_attention(q, k, v, is_causal: bool) -> torch.Tensor:
    """`cliplab.models.attention.attention` made to take its explicit path at any length."""
    saved = attention_mod.CPU_EXPLICIT_MAX_TOKENS, attention_mod.CPU_EXPLICIT_MAX_TOKENS_HALF
    attention_mod.CPU_EXPLICIT_MAX_TOKENS = attention_mod.CPU_EXPLICIT_MAX_TOKENS_HALF = 1 << 30
    try:
        return attention_mod.attention(q, k, v, is_causal=is_causal)
    finally:
        attention_mod.CPU_EXPLICIT_MAX_TOKENS, attention_mod.CPU_EXPLICIT_MAX_TOKENS_HALF = saved


def time_call(fn, inputs, grad, reps: int, device: str) -> float:
    def once():
        for t in inputs:
            t.grad = None
        fn(*inputs).backward(grad)
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        once()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    print(
        f"attention fwd+bwd on {args.device}, {torch.get_num_threads()} threads, ms per call (median of {args.reps})\n"
    )
    print(
        "| shape | dtype | fused | explicit | fused / explicit | the rule takes |\n|---|---|---:|---:|---:|---|"
    )
    for name, batch, heads, tokens, causal in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            inputs = [
                torch.randn(batch, heads, tokens, 64, generator=gen).to(args.device, dtype).requires_grad_()
                for _ in range(3)
            ]
            grad = torch.randn_like(inputs[0])

            fused = functools.partial(F.scaled_dot_product_attention, is_causal=causal)
            explicit = functools.partial(explicit_attention, is_causal=causal)
            if args.device != "cpu":  # the rule's explicit path is for the CPU only
                explicit = None
            f_ms = time_call(fused, inputs, grad, args.reps, args.device)
            e_ms = time_call(explicit, inputs, grad, args.reps, args.device) if explicit else float("nan")
            taken = "explicit" if attention_mod.explicit_attention_pays(inputs[0]) else "fused"
            print(
                f"| {name} b{batch} h{heads} L{tokens} | {str(dtype)[6:]} | {f_ms:.2f} | {e_ms:.2f} | {f_ms / e_ms:.2f}x | {taken} |"
            )


if __name__ == "__main__":
    main()

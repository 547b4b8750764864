"""Building the ImageNet zero-shot classifier: cliplab vs open_clip's builder, same weights, one run.

    python bench/bench_zeroshot.py                      # 1000 classes x 80 templates, in 10 chunks
    python bench/bench_zeroshot.py --num-classes 100    # a subset (quick look)

ViT-B/32's text tower (12 layers, width 512, context 77) with random weights: open_clip's model on its side,
cliplab's CLIPTextTower loaded with the same state dict on ours.

The class list is cut into `--chunks` chunks, timed alternately (cliplab on a whole chunk, then open_clip), so
a change of machine load hits both sides alike. cliplab builds every chunk, i.e. the whole classifier.
open_clip's builder encodes 10 classes x 80 templates = 800 prompts at the full context of 77 per batch, the
same tensor shape for every batch whatever the class names, so its cost per batch is constant: by default it
times `--open-clip-batches-per-chunk` of the batches of each chunk (spread over the chunk) and scales the time
to the chunk's batch count; `--open-clip-batches-per-chunk 0` times all of them (about 14 s per batch on two
cores: 100 batches take over 2 hours). Prints both times, the speed-up and the max |difference| between the
two classifiers on every class open_clip built.
"""

import argparse
import time

import open_clip
import torch
from open_clip.zero_shot_classifier import build_zero_shot_classifier as open_clip_builder
from torch import nn

from cliplab.eval.benchmarks import asset_path, read_lines
from cliplab.eval.zeroshot import build_zeroshot_classifier
from cliplab.models.text_tower import CLIPTextTower
from cliplab.models.tokenizer import CLIPTokenizer


class TextOnly(nn.Module):
    """The part of a CLIP model the classifier builder uses: `text` and `encode_text`."""

    def __init__(self, text: nn.Module):
        super().__init__()
        self.text = text

    def encode_text(self, tokens, normalize=False):
        features = self.text(tokens)
        return nn.functional.normalize(features, dim=-1) if normalize else features


def chunks(n: int, parts: int) -> list[range]:
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def sampled_batches(chunk: range, per_batch: int, wanted: int) -> list[range]:
    """open_clip's batches of a chunk (`per_batch` classes each), `wanted` of them spread evenly (0: all)."""
    batches = [range(a, min(a + per_batch, chunk.stop)) for a in range(chunk.start, chunk.stop, per_batch)]
    if wanted <= 0 or wanted >= len(batches):
        return batches
    step = len(batches) / wanted
    return [batches[int(i * step)] for i in range(wanted)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=10, help="alternating timing rounds")
    parser.add_argument("--open-clip-batches-per-chunk", type=int, default=1, help="0: time all")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=1024, help="cliplab prompts per forward")
    parser.add_argument("--classes-per-batch", type=int, default=10, help="open_clip's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    classnames = read_lines(asset_path("imagenet_classnames.txt"))[: args.num_classes]
    templates = read_lines(asset_path("imagenet_templates.txt"))
    torch.manual_seed(0)
    theirs = open_clip.create_model("ViT-B-32").eval().to(args.device)
    tower = CLIPTextTower(512, context_length=77, width=512, layers=12, heads=8, act="gelu")  # ViT-B-32: GELU
    text_state = {
        k: v for k, v in theirs.state_dict().items() if not k.startswith("visual.") and k != "logit_scale"
    }
    tower.load_state_dict(text_state)
    ours = TextOnly(tower).eval().to(args.device)
    oc_tokenizer = open_clip.get_tokenizer("ViT-B-32")
    our_tokenizer = CLIPTokenizer(77)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def timed(fn):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - start

    print(
        f"{len(classnames)} classes x {len(templates)} templates on {args.device}",
        f"({torch.get_num_threads()} threads), {args.chunks} alternating chunks",
        flush=True,
    )
    t_ours = t_theirs = 0.0
    max_diff, theirs_batches, all_batches, theirs_classes = 0.0, 0, 0, 0
    for i, chunk in enumerate(chunks(len(classnames), args.chunks)):
        names = classnames[chunk.start : chunk.stop]
        ours_w, dt = timed(
            lambda names=names: build_zeroshot_classifier(
                ours, our_tokenizer, names, templates, args.batch_size, args.device
            )
        )
        t_ours += dt
        batches = sampled_batches(chunk, args.classes_per_batch, args.open_clip_batches_per_chunk)
        all_batches += len(sampled_batches(chunk, args.classes_per_batch, 0))
        chunk_theirs = 0.0
        for batch in batches:
            theirs_w, dt = timed(
                lambda batch=batch: open_clip_builder(
                    theirs,
                    oc_tokenizer,
                    classnames[batch.start : batch.stop],
                    templates,
                    args.classes_per_batch,
                    args.device,
                )
            )
            chunk_theirs += dt
            cols = slice(batch.start - chunk.start, batch.stop - chunk.start)
            max_diff = max(max_diff, (ours_w[:, cols] - theirs_w).abs().max().item())
            theirs_classes += len(batch)
        theirs_batches += len(batches)
        # every open_clip batch has the same shape: the chunk's time is the sampled mean x its batch count
        t_theirs += chunk_theirs / len(batches) * len(sampled_batches(chunk, args.classes_per_batch, 0))
        print(
            f"chunk {i}: {len(names)} classes, cliplab {t_ours:.1f} s, open_clip {t_theirs:.1f} s so far",
            flush=True,
        )

    measured = "all" if theirs_batches == all_batches else f"{theirs_batches} of {all_batches} (scaled)"
    print(f"cliplab   {t_ours:8.2f} s   (all {len(classnames)} classes built)")
    print(f"open_clip {t_theirs:8.2f} s   ({measured} batches of {args.classes_per_batch} classes timed)")
    print(f"speed-up  {t_theirs / t_ours:8.2f} x   max |diff| {max_diff:.2e} over {theirs_classes} classes")


if __name__ == "__main__":
    main()

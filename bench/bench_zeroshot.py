"""Building the ImageNet zero-shot classifier: cliplab vs open_clip's builder, same weights, one run.

    python bench/bench_zeroshot.py                      # 1000 classes x 80 templates (slow on a small CPU)
    python bench/bench_zeroshot.py --num-classes 100    # a subset; the speed-up does not depend on it

ViT-B/32's text tower (12 layers, width 512, context 77) with random weights: open_clip's model on its side,
cliplab's CLIPTextTower loaded with the same state dict on ours. Prints both times, the speed-up and the
max |difference| of the classifier weights.
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-classes", type=int, default=1000)
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
    if not getattr(tower, "causal", False):
        tower.causal = (
            True  # the tower is causal (is_causal=True) and pools at EOT; declare it if the class does not
        )
    ours = TextOnly(tower).eval().to(args.device)
    oc_tokenizer = open_clip.get_tokenizer("ViT-B-32")
    our_tokenizer = CLIPTokenizer(77)

    print(
        f"{len(classnames)} classes x {len(templates)} templates on {args.device}",
        f"({torch.get_num_threads()} threads)",
    )
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    sync()
    start = time.perf_counter()
    ours_w = build_zeroshot_classifier(
        ours, our_tokenizer, classnames, templates, args.batch_size, args.device
    )
    sync()
    t_ours = time.perf_counter() - start
    print(f"cliplab   {t_ours:8.2f} s", flush=True)

    start = time.perf_counter()
    theirs_w = open_clip_builder(
        theirs, oc_tokenizer, classnames, templates, args.classes_per_batch, args.device
    )
    sync()
    t_theirs = time.perf_counter() - start
    print(f"open_clip {t_theirs:8.2f} s", flush=True)

    diff = (ours_w - theirs_w).abs().max().item()
    print(f"speed-up  {t_theirs / t_ours:8.2f} x   max |diff| {diff:.2e}   shape {tuple(ours_w.shape)}")


if __name__ == "__main__":
    main()

"""Building a zero-shot classifier: cliplab's builder vs open_clip's, ViT-B/32's text tower, same weights.

Every 50th ImageNet class (20 classes) x the 80 CLIP templates, fp32 on the CPU. cliplab: its CLIP model
(loaded from the seeded open_clip reference weights) through `cliplab.eval.zeroshot.build_zeroshot_classifier`
(all prompts in batches of 1,024, each trimmed to its longest prompt: exact for the causal CLIP text tower).
open_clip: `open_clip.CLIP` with the same weights through its `build_zero_shot_classifier` (10 classes x 80
templates per batch at the full context of 77). A one-class build warms each side up first. Gate: the
two classifiers, projected on the same seeded random matrix, agree to 1e-4.

    python -m bench zeroshot [--quick]
"""

import os
import sys
import time

import torch

from bench.bench_train_step import load_reference_state, model_config, openclip_config, write_reference_state

MODEL = "vit_b32"


def classifier_checksum(classifier: torch.Tensor) -> float:
    """A scalar that moves with any entry of the [E, C] classifier: its projection on seeded noise."""
    noise = torch.randn(classifier.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return float((classifier.double() * noise).sum())


def builder(side: str, model_cfg: dict, state: dict, templates: list):
    """A function class names -> [E, C] classifier, for one side."""
    if side == "cliplab":
        from cliplab.eval.zeroshot import build_zeroshot_classifier
        from cliplab.models.build import build_clip, build_tokenizer
        from cliplab.models.interop import load_openclip_state_dict

        model = build_clip(model_cfg)
        load_openclip_state_dict(model, state)
        tokenizer = build_tokenizer(model_cfg)
        return lambda names: build_zeroshot_classifier(model.eval(), tokenizer, names, templates, 1024, "cpu")
    from open_clip.model import CLIP
    from open_clip.tokenizer import SimpleTokenizer
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    model = CLIP(**openclip_config(model_cfg))
    model.load_state_dict(state)
    tokenizer = SimpleTokenizer(context_length=model_cfg["context_length"])
    return lambda names: build_zero_shot_classifier(model.eval(), tokenizer, names, templates, 10, "cpu")


def worker(spec: dict) -> dict:
    from cliplab.eval.benchmarks import asset_path, read_lines

    torch.set_num_threads(spec["threads"])
    classnames = read_lines(asset_path("imagenet_classnames.txt"))[:: spec["every"]]
    templates = read_lines(asset_path("imagenet_templates.txt"))
    build = builder(spec["side"], model_config(MODEL), load_reference_state(spec["state_path"]), templates)
    start = time.perf_counter()
    build(classnames[:1])
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    classifier = build(classnames)
    seconds = time.perf_counter() - start
    return {
        "classes_per_s": len(classnames) / seconds,
        "build_s": seconds,
        "checksum": classifier_checksum(classifier),
        "warmup_s": warmup_s,
    }


def cases(device: str, threads: int, quick: bool, state_dir: str) -> list:
    from bench.harness import Case

    if device.startswith("cuda"):
        return []  # the CPU row is the one measured; the builder's GPU path is the same code
    path = os.path.join(state_dir, f"{MODEL}.safetensors")
    if not os.path.exists(path):
        write_reference_state(model_config(MODEL), path)
    every = 100 if quick else 50
    return [
        Case(
            name=f"zero-shot classifier ViT-B/32 text, {1000 // every} ImageNet classes x 80 templates",
            module="bench.bench_zeroshot",
            spec=dict(state_path=path, every=every, threads=threads),
            metric="classes_per_s",
            unit="classes/s",
            gate_key="checksum",
            gate_rtol=1e-4,
        )
    ]


if __name__ == "__main__":
    from bench.entry import benchmark_main

    sys.exit(benchmark_main("zeroshot", __doc__, worker))

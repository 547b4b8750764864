"""The files Hugging Face's clients need beside a `CLIPModel`: tokenizer and image processor.

`transformers.pipeline("zero-shot-image-classification", model=<dir>)`, `CLIPProcessor.from_pretrained(<dir>)`
and `CLIPTokenizer.from_pretrained(<dir>)` read them. The tokenizer is cliplab's CLIP BPE (`vocab.json` +
`merges.txt`, and the `tokenizer.json` transformers builds from them): the same ids as
`cliplab.models.tokenizer.CLIPTokenizer` up to the end-of-text token, then HF's convention of padding with
end-of-text (cliplab pads with 0; the text features are the same, CLIP pools at the first end-of-text).
HF's tokenizer does not unescape HTML entities (`&amp;`) as cliplab's does. The image processor resizes
the shortest side (bicubic), centre-crops and normalises, as `cliplab.data.transforms.eval_transform`; the
pixels agree exactly for images at the model's size. HF resizes with torch (about one grey level from
Pillow's) and floors the crop offset (cliplab rounds half to even: an odd excess shifts HF's crop by one pixel).
"""

import json
from pathlib import Path

from cliplab.models.tokenizer import EOT_TOKEN, SOT_TOKEN, CLIPTokenizer

# HF's (and OpenAI's vocab.json) spelling of the two special tokens.
HF_SPECIAL = {SOT_TOKEN: "<|startoftext|>", EOT_TOKEN: "<|endoftext|>"}


def save_clip_tokenizer(out: Path, context_length: int) -> None:
    from transformers import CLIPTokenizer as HFCLIPTokenizer

    ours = CLIPTokenizer(context_length=context_length)
    vocab = {HF_SPECIAL.get(token, token): index for token, index in ours._encoder.items()}
    merges = sorted(ours._ranks, key=ours._ranks.get)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # One header line, then the merges in rank order (the layout OpenAI's and HF's CLIP files share).
    lines = ["#version: 0.2", *(" ".join(pair) for pair in merges)]
    (out / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    hf = HFCLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=context_length)
    hf.save_pretrained(out)


def save_clip_image_processor(out: Path, image_size: int, mean, std) -> None:
    from transformers import CLIPImageProcessor

    CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=3,  # PIL.Image.BICUBIC
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
        do_convert_rgb=True,
    ).save_pretrained(out)

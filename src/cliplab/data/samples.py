"""Turning raw image-caption pairs into training samples, and samples into batches.

Shared by every source: a sample is `(uint8 array [H, W, 3], caption str)`; anything that cannot become
one is recorded in the FaultLog and dropped (None). The collate writes each uint8 image, normalised, straight
into the float batch (shared memory in a worker) and tokenizes all captions with one call, inside the worker.
"""

import math
import random

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import get_worker_info

from cliplab.data import faults as F
from cliplab.data.seeds import stable_seed
from cliplab.data.transforms import ClipImageTransform, ImageTooLarge

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def decode_caption(data: bytes | str | None) -> str | None:
    if data is None:
        return None
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    return text.strip()


def make_sample(
    image_bytes, caption, transform: ClipImageTransform, faults: F.FaultLog, shard, key, generator=None
):
    """Decode one pair; return (array, caption) or None after recording why it was skipped. Random crops
    draw from `generator` (default: torch's global RNG)."""
    if image_bytes is None:
        faults.record(F.MISSING_IMAGE, shard, key)
        return None
    if caption is None:
        faults.record(F.MISSING_CAPTION, shard, key)
        return None
    if not caption:
        faults.record(F.EMPTY_CAPTION, shard, key)
        return None
    try:
        array = transform.decode(image_bytes, generator)
    except (ImageTooLarge, Image.DecompressionBombError) as e:
        faults.record(F.IMAGE_TOO_LARGE, shard, key, str(e))
        return None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        # Pillow reports broken data with any of these (truncated JPEG is OSError, bad PNG chunk SyntaxError).
        faults.record(F.CORRUPT_IMAGE, shard, key, f"{type(e).__name__}: {e}")
        return None
    return array, caption


def pick_caption(sample: dict, caption_seed: tuple | None) -> str | None:
    """The caption of a sample: its `txt`, or, for samples that carry alternatives (`<key>.captions`, one
    per line) and a `caption_seed` (training: (seed, epoch)), one of them drawn from (seed, epoch, key), so
    every epoch reads a fresh one and a resumed epoch reads the same."""
    alternatives = decode_caption(sample.get("captions")) if caption_seed is not None else None
    if alternatives:
        lines = [line for line in alternatives.splitlines() if line.strip()]
        if lines:
            rng = random.Random(stable_seed(*caption_seed, sample["__key__"]))
            return lines[rng.randrange(len(lines))].strip()
    return decode_caption(sample.get("txt"))


def sample_from_dict(sample: dict, transform, faults, shard, generator=None, caption_seed=None):
    """A webdataset sample dict -> (array, caption) or None."""
    image = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
    caption = pick_caption(sample, caption_seed)
    return make_sample(image, caption, transform, faults, shard, sample["__key__"], generator)


def trim_padding(tokens: torch.Tensor, pad_token_id: int | None, multiple: int = 8) -> torch.Tensor:
    """Drops the trailing columns that are padding in every row, keeping a multiple of `multiple` columns
    (fewer distinct shapes for compiled code, tensor-core friendly widths).

    Exact for every text tower here: the CLIP tower is causal and pools at the end-of-text token, so no
    kept position attends to a dropped one; the Hugging Face towers mask padding out. Captions are mostly
    far shorter than the context, so this skips most of the text tower's work.
    """
    if pad_token_id is None or tokens.ndim != 2:
        return tokens
    used = (tokens != pad_token_id).any(dim=0).nonzero()
    length = int(used[-1]) + 1 if len(used) else 1
    length = min(tokens.shape[1], -(-length // multiple) * multiple)
    return tokens if length == tokens.shape[1] else tokens[:, :length].contiguous()


class Collate:
    """list[(uint8 HWC array, caption)] -> (float images [B, 3, H, W], tokens [B, L] or captions).

    With `trim_padding`, L is the longest caption of the batch rounded up to a multiple of 8 (see
    `trim_padding`), not the tokenizer's context length.
    """

    def __init__(self, transform: ClipImageTransform, tokenizer=None, trim_padding: bool = False):
        self.transform = transform
        self.tokenizer = tokenizer
        self.trim = trim_padding and tokenizer is not None

    def __call__(self, batch):
        batch = [s for s in batch if s is not None]  # map-style sources return None for skipped items
        if not batch:
            return None
        height, width, channels = batch[0][0].shape
        images = _batch_tensor((len(batch), channels, height, width))
        affine = self.transform.affine()
        for out, (array, _) in zip(images, batch, strict=True):
            self.transform.normalize_into(out, array, affine)
        captions = [s[1] for s in batch]
        if self.tokenizer is None:
            return images, captions
        tokens = self.tokenizer(captions)
        if self.trim:
            tokens = trim_padding(tokens, getattr(self.tokenizer, "pad_token_id", None))
        return images, tokens


def _batch_tensor(shape) -> torch.Tensor:
    """Empty float tensor; in a data loader worker it lives in shared memory from the start, as in
    torch's default_collate, so sending the batch to the main process does not copy it again."""
    if get_worker_info() is None:
        return torch.empty(shape)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * 4)
    return torch.empty(0).set_(storage, 0, shape)

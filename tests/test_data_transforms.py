"""uint8-until-the-batch transforms give open_clip's pixels (the oracle); draft decoding stays close."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cliplab.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform, train_transform

open_clip_transform = pytest.importorskip("open_clip.transform")


def photo(width, height, seed=0):
    """A smooth random image (JPEG-friendly, like a photo) as PIL RGB."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


def as_jpeg(img):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.mark.parametrize("size", [(64, 48), (48, 96), (200, 150), (33, 33)])
def test_eval_transform_matches_open_clip(size):
    img = photo(*size)
    ours = eval_transform(32, CLIP_MEAN, CLIP_STD)(img)
    theirs = open_clip_transform.image_transform(32, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)(img)
    assert ours.shape == theirs.shape == (3, 32, 32) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_train_transform_matches_open_clip_with_the_same_seed(seed):
    img = photo(120, 90, seed)
    ours_t = train_transform(48, CLIP_MEAN, CLIP_STD)
    theirs_t = open_clip_transform.image_transform(48, is_train=True, mean=CLIP_MEAN, std=CLIP_STD)
    torch.manual_seed(seed)
    ours = ours_t(img)
    torch.manual_seed(seed)
    theirs = theirs_t(img)
    # One resize with a source box instead of crop-then-resize: at most one grey level apart, rarely.
    one_level = 1 / 255 / min(CLIP_STD) + 1e-5
    torch.testing.assert_close(ours, theirs, atol=one_level, rtol=0)
    assert (ours - theirs).abs().gt(1e-5).float().mean() < 0.01


def test_decode_from_bytes_equals_call_on_pil_and_batch_normalize():
    data = as_jpeg(photo(100, 80))
    t = eval_transform(40, draft=False)
    array = t.decode(data)
    assert array.dtype == np.uint8 and array.shape == (40, 40, 3)
    expected = t(Image.open(io.BytesIO(data)))
    batch = t.normalize(torch.from_numpy(np.stack([array, array])))
    assert batch.shape == (2, 3, 40, 40) and batch.is_contiguous()
    torch.testing.assert_close(batch[1], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("train", [False, True])
def test_draft_decoding_is_close_to_full_decoding(train):
    # Train crops are drawn on the stored size, so one seed gives the same region with or without draft
    # (its edges move by under one reduced pixel: the content is kept smooth at the output scale).
    data = as_jpeg(photo(64, 64 if train else 80, seed=3).resize((512, 512 if train else 640), Image.BICUBIC))
    make = train_transform if train else eval_transform
    fast, full = make(64, draft=True), make(64, draft=False)
    for seed in range(3):
        torch.manual_seed(seed)
        a = fast.normalize(torch.from_numpy(np.array(fast.decode(data))))
        torch.manual_seed(seed)
        b = full.normalize(torch.from_numpy(np.array(full.decode(data))))
        assert a.shape == b.shape == (3, 64, 64)
        assert (a - b).abs().mean() < 0.05  # normalised units: a few grey levels


def test_draft_reduction_is_chosen_from_the_crop_not_the_whole_image():
    t = train_transform(64)
    assert t.draft_factor(512, 600) == 8 and t.draft_factor(256, 700) == 4
    assert t.draft_factor(127, 1000) == 1  # a small crop of a large image is decoded at full size
    small_crops = train_transform(64, scale=(0.01, 0.01))
    data = as_jpeg(photo(1024, 1024, seed=4))
    torch.manual_seed(0)
    a = small_crops.decode(data)
    torch.manual_seed(0)
    b = train_transform(64, scale=(0.01, 0.01), draft=False).decode(data)
    np.testing.assert_array_equal(a, b)  # crop sides 89-118 px < 2 x 64: no reduction at all


def test_train_decode_is_within_two_grey_levels_of_open_clip_and_unbiased():
    # torch's uint8 bicubic (antialiased) and Pillow's round differently: a few pixels differ by 1-2 levels.
    data = as_jpeg(photo(300, 256, seed=5))
    ours_t = train_transform(224, draft=False)
    theirs_t = open_clip_transform.image_transform(224, is_train=True, mean=CLIP_MEAN, std=CLIP_STD)
    level = 1 / 255 / min(CLIP_STD)
    for seed in range(3):
        torch.manual_seed(seed)
        ours = ours_t.normalize(torch.from_numpy(ours_t.decode(data)))
        torch.manual_seed(seed)
        theirs = theirs_t(Image.open(io.BytesIO(data)))
        diff = ours - theirs
        assert diff.abs().max() <= 2 * level + 1e-5
        assert diff.abs().mean() < 0.3 * level and diff.mean().abs() < 0.05 * level


def test_transparency_becomes_white():
    img = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (5, 5, 15, 15))
    out = eval_transform(20, draft=False).apply_uint8(img)
    assert out[0, 0].tolist() == [255, 255, 255] and out[10, 10].tolist() == [255, 0, 0]

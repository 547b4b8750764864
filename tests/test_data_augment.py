"""Drawing augmentations: each switch changes pixels when on and nothing when off (not even the crop)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cliplab.data.augment import DrawingAugment
from cliplab.data.transforms import ClipImageTransform, train_transform
from cliplab.utils.errors import ConfigError

SWITCHES = {
    "zoom_out": 0.5,
    "color_jitter": 0.5,
    "grayscale_p": 1.0,
    "invert_p": 1.0,
    "dark_background_p": 1.0,
}


def icon_png() -> bytes:
    """A coloured drawing on white, like the icons and emoji."""
    img = Image.new("RGB", (96, 96), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.ellipse((10, 10, 86, 86), fill=(230, 40, 30), outline=(0, 0, 0), width=4)
    draw.rectangle((35, 35, 60, 60), fill=(20, 90, 220))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def decode(transform, seed=7) -> np.ndarray:
    return transform.decode(icon_png(), torch.Generator().manual_seed(seed))


def test_all_switches_off_is_the_plain_clip_crop():
    plain = ClipImageTransform(64, train=True)
    assert np.array_equal(decode(train_transform(64)), decode(plain))
    assert train_transform(64).augment is None  # nothing runs, nothing is drawn from the generator


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_each_switch_changes_pixels_when_on(switch):
    plain = decode(train_transform(64))
    augmented = decode(train_transform(64, **{switch: SWITCHES[switch]}))
    assert augmented.shape == plain.shape and augmented.dtype == np.uint8
    assert np.abs(augmented.astype(int) - plain.astype(int)).mean() > 2.0
    assert np.array_equal(augmented, decode(train_transform(64, **{switch: SWITCHES[switch]})))  # seeded


def test_switches_do_what_they_say():
    plain = decode(train_transform(64)).astype(int)
    grey = decode(train_transform(64, grayscale_p=1.0))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    inverted = decode(train_transform(64, invert_p=1.0)).astype(int)
    assert np.array_equal(inverted, 255 - plain)
    zoomed = decode(train_transform(64, zoom_out=0.5), seed=1)
    border = np.concatenate([zoomed[0], zoomed[-1], zoomed[:, 0], zoomed[:, -1]])
    assert (border >= 250).mean() > 0.5  # shrunk onto white: most of the border is background


def test_dark_background_blackens_the_white_around_the_drawing_and_keeps_the_white_inside():
    img = Image.new("RGB", (64, 64), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.ellipse((8, 8, 56, 56), fill=(230, 40, 30), outline=(0, 0, 0), width=3)
    draw.ellipse((26, 26, 38, 38), fill=(255, 255, 255))  # a white eye inside the face
    out = io.BytesIO()
    img.save(out, format="PNG")
    transform = train_transform(64, scale=(1.0, 1.0), ratio=(1.0, 1.0), dark_background_p=1.0)
    dark = transform.decode(out.getvalue(), torch.Generator().manual_seed(0)).astype(int)
    assert (dark[:4, :4] == 0).all() and (dark[-4:, -4:] == 0).all()  # the corners: background, now black
    assert (dark[31:33, 31:33] >= 250).all()  # the eye is enclosed by the drawing: still white
    red = np.asarray(img)[20:44, 12:20].astype(int)  # inside the red face, left of the eye
    assert np.abs(dark[20:44, 12:20] - red).max() <= 2  # the drawing keeps its colours


def test_dark_background_inverts_dark_line_art_instead_of_hiding_it():
    img = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(img).line((10, 54, 54, 10), fill=(0, 0, 0), width=5)  # a black stroke, like a digit
    out = io.BytesIO()
    img.save(out, format="PNG")
    transform = train_transform(64, scale=(1.0, 1.0), ratio=(1.0, 1.0), dark_background_p=1.0)
    dark = transform.decode(out.getvalue(), torch.Generator().manual_seed(0)).astype(int)
    assert np.array_equal(dark, 255 - np.asarray(img).astype(int))  # white stroke on black, still visible


def test_bad_values_stop_with_one_line():
    with pytest.raises(ConfigError, match="zoom_out"):
        DrawingAugment(zoom_out=1.0)
    with pytest.raises(ConfigError, match="invert_p"):
        train_transform(64, invert_p=2)
    with pytest.raises(ConfigError, match="dark_background_p"):
        train_transform(64, dark_background_p=-0.1)

"""A folder of images with one caption file per image (`cat.jpg` + `cat.txt`), searched recursively."""

import os

from cliplab.data.interface import DataSource
from cliplab.data.pairs_dataset import ImageCaptionPairs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class FolderSource(DataSource):
    def __init__(self, root, caption_suffix: str = ".txt"):
        self.root = str(root)
        self.caption_suffix = caption_suffix

    def build(self, transform, faults, **_) -> ImageCaptionPairs:
        root = os.path.expanduser(self.root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {self.root!r} does not exist")
        images, captions = [], []
        for directory, _, files in sorted(os.walk(root)):
            for name in sorted(files):
                if not name.lower().endswith(IMAGE_SUFFIXES):
                    continue
                image = os.path.join(directory, name)
                caption_path = os.path.splitext(image)[0] + self.caption_suffix
                caption = None  # a missing caption file is reported when the item is read
                if os.path.isfile(caption_path):
                    with open(caption_path, encoding="utf-8", errors="replace") as f:
                        caption = f.read()
                images.append(image)
                captions.append(caption)
        if not images:
            raise FileNotFoundError(f"no images found under {self.root!r}")
        return ImageCaptionPairs(images, captions, transform, faults, self.root)

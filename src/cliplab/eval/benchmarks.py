"""Zero-shot benchmark data sets: class names, prompt templates and labelled images.

Each benchmark is built from the `benchmark` of a `conf/evals/<name>.yaml` entry and loads lazily (on the first `samples`
access), so composing a config never touches the disk. Bad input fails with one clear line (missing path,
empty folder, class folders that do not match the class-name file); unreadable images are skipped and
counted by the evaluation loop, never silently dropped.
"""

import csv
import gzip
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cliplab.utils.errors import DataError
from cliplab.utils.paths import cache_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class BenchmarkError(DataError, ValueError):
    """A benchmark's data is missing or inconsistent (the message says which and how to fix it)."""


def asset_path(name: str) -> Path:
    """A data file shipped with cliplab.eval (class names, templates)."""
    return Path(str(resources.files("cliplab.eval") / "assets" / name))


def read_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a text file, stripped (no comment syntax: a class may be called '#')."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"file not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line]


def _as_list(value: str | Path | Sequence[str] | None) -> list[str] | None:
    """A list given inline (YAML list) or as a path to a one-per-line text file."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return read_lines(value)
    return [str(v) for v in value]


class LabelledImages(Dataset):
    """`(image_tensor | None, label)`; None marks an unreadable image (counted by `collate_skipping`)."""

    def __init__(self, items: Sequence[tuple[object, int]], load: Callable[[object], Image.Image], transform):
        self.items, self.load, self.transform = items, load, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        source, label = self.items[index]
        try:
            image = self.transform(self.load(source))
        except Exception:  # any decode failure: the loop counts it, the run goes on
            image = None
        return image, label


def collate_skipping(batch):
    """Stack the readable images; returns `(images | None, labels, number_skipped)`."""
    kept = [(img, label) for img, label in batch if img is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return None, torch.empty(0, dtype=torch.long), skipped
    return torch.stack([img for img, _ in kept]), torch.tensor([label for _, label in kept]), skipped


def _open_rgb(path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


class ZeroShotBenchmark:
    """Base: subclasses fill `_load() -> (classnames, items)`; `templates` come from config."""

    def __init__(self, name: str, templates: str | Path | Sequence[str], limit: int | None = None):
        self.name = name
        self._templates = templates
        self.limit = limit

    @cached_property
    def templates(self) -> list[str]:
        templates = _as_list(self._templates)
        if not templates:
            raise BenchmarkError(f"benchmark {self.name!r}: no prompt templates")
        return templates

    @cached_property
    def _loaded(self):
        classnames, items = self._load()
        if not items:
            raise BenchmarkError(f"benchmark {self.name!r}: no images found")
        if len(classnames) < 2:
            raise BenchmarkError(f"benchmark {self.name!r}: zero-shot classification needs 2+ classes")
        if self.limit is not None:  # an evenly spread subset keeps every class represented
            step = max(1, len(items) // self.limit)
            items = items[::step][: self.limit]
        return classnames, items

    @property
    def classnames(self) -> list[str]:
        return self._loaded[0]

    @property
    def samples(self) -> list[tuple[object, int]]:
        return self._loaded[1]

    def load_image(self, source) -> Image.Image:
        return _open_rgb(source)

    def dataset(self, transform) -> "LabelledImages":
        return LabelledImages(self.samples, self.load_image, transform)

    def _load(self):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ImageFolderBenchmark(ZeroShotBenchmark):
    """`root/<class folder>/<images>`; class folders sorted by name give the labels.

    `classnames`: None (folder names, `_` read as space), a list, or a file with either one name per line
    in sorted-folder order (as the ImageNet file) or `folder<TAB>name` lines.
    """

    def __init__(self, name: str, root: str | Path, templates, classnames=None, limit: int | None = None):
        super().__init__(name, templates, limit)
        self.root = Path(root) if root else None
        self._classnames = classnames

    def _load(self):
        if self.root is None or not self.root.is_dir():
            raise BenchmarkError(f"benchmark {self.name!r}: folder not found: {self.root}")
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise BenchmarkError(f"benchmark {self.name!r}: {self.root} has no class folders")
        names = self._class_names(folders)
        items = []
        for label, folder in enumerate(folders):
            files = sorted(p for p in (self.root / folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            items += [(str(f), label) for f in files]
        if not items:
            raise BenchmarkError(f"benchmark {self.name!r}: {self.root} has class folders but no images")
        return names, items

    def _class_names(self, folders: list[str]) -> list[str]:
        if self._classnames is None:
            return [f.replace("_", " ") for f in folders]
        lines = _as_list(self._classnames)
        if all("\t" in line for line in lines):
            mapping = dict(line.split("\t", 1) for line in lines)
            missing = [f for f in folders if f not in mapping]
            if missing:
                raise BenchmarkError(
                    f"benchmark {self.name!r}: {len(missing)} class folders have no name in the class-name "
                    f"file, e.g. {missing[:3]}"
                )
            return [mapping[f].strip() for f in folders]
        if len(lines) != len(folders):
            raise BenchmarkError(
                f"benchmark {self.name!r}: {len(folders)} class folders in {self.root} but {len(lines)} "
                "class names: they must match one to one (sorted folder order)"
            )
        return lines


def imagenet(root: str | Path, name: str = "imagenet", limit: int | None = None) -> ImageFolderBenchmark:
    """ImageNet val as an ImageFolder (1000 wnid folders) with OpenAI's curated names and 80 templates."""
    return ImageFolderBenchmark(
        name,
        root,
        templates=asset_path("imagenet_templates.txt"),
        classnames=asset_path("imagenet_classnames.txt"),
        limit=limit,
    )


FASHION_MNIST_DEB = "dataset-fashion-mnist=0.0~git20200523.55506a9-1"
FASHION_MNIST_CLASSES = [
    "t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip


def fetch_fashion_mnist() -> Path:
    """The extracted Debian package's data folder in the cache (fetched once with apt-get download)."""
    target = cache_dir() / "fashion_mnist" / "0.0-git20200523.55506a9-1"
    data = target / "usr" / "share" / "datasets" / "fashion-mnist"
    if (data / "t10k-labels-idx1-ubyte.gz").is_file():
        return data
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise BenchmarkError(
            "fashion_mnist needs apt-get and dpkg-deb to fetch the Debian package "
            f"{FASHION_MNIST_DEB}; fetch and extract it by hand into {target}"
        )
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        got = subprocess.run(
            ["apt-get", "download", FASHION_MNIST_DEB], cwd=tmp, capture_output=True, text=True
        )
        debs = list(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or not debs:
            last = (got.stderr.strip().splitlines() or ["no .deb written"])[-1]
            raise BenchmarkError(f"apt-get download {FASHION_MNIST_DEB} failed: {last}")
        staging = Path(tmp) / "x"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # atomic: a half-extracted folder is never taken for a complete one
    return data


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian dims after a 4-byte magic whose last byte is the rank."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class FashionMNISTBenchmark(ZeroShotBenchmark):
    """Fashion-MNIST test (10k) or train (60k) images, 28x28 grey, shown to the model as RGB."""

    def __init__(self, templates, name: str = "fashion_mnist", classnames=None, split: str = "test",
                 limit: int | None = None):  # fmt: skip
        super().__init__(name, templates, limit)
        if split not in ("test", "train"):
            raise BenchmarkError(f"fashion_mnist split must be 'test' or 'train', got {split!r}")
        self.split = split
        self._classnames = classnames

    def _load(self):
        data = fetch_fashion_mnist()
        prefix = "t10k" if self.split == "test" else "train"
        self._images = read_idx(data / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(data / f"{prefix}-labels-idx1-ubyte.gz")
        names = _as_list(self._classnames) or list(FASHION_MNIST_CLASSES)
        if len(names) != 10:
            raise BenchmarkError(f"fashion_mnist has 10 classes, got {len(names)} class names")
        return names, [(i, int(label)) for i, label in enumerate(labels)]

    def load_image(self, index) -> Image.Image:
        return Image.fromarray(self._images[index], mode="L").convert("RGB")


class EmojiBenchmark(ZeroShotBenchmark):
    """A zero-shot split of the default emoji data set (`style`: the held-out artist; `novel`; `group`),
    optionally only the images drawn in `styles` (e.g. the novel concepts in the training styles).

    `class_prompts="subgroups"` (the `group` split only) gives each group its own prompts: every template
    filled with the group's name and with each of its Unicode subgroups ("animal-mammal" read "animal
    mammal"), averaged into one class embedding, where a bare name such as "objects" says little.
    """

    CLASS_PROMPTS = (None, "subgroups")

    def __init__(self, name: str = "emoji", split: str = "style", image_size: int = 64, templates=None,
                 limit: int | None = None, dataset_options: dict | None = None,
                 root: str | Path | None = None, styles=None, class_prompts: str | None = None):  # fmt: skip
        super().__init__(name, templates, limit)
        if class_prompts not in self.CLASS_PROMPTS:
            raise BenchmarkError(f"benchmark {name!r}: class_prompts must be one of {self.CLASS_PROMPTS}, "
                                 f"got {class_prompts!r}")  # fmt: skip
        if class_prompts == "subgroups" and split != "group":
            raise BenchmarkError(
                f"benchmark {name!r}: class_prompts=subgroups needs split=group, got {split!r}"
            )
        self.class_prompts = class_prompts
        self.split, self.image_size = split, image_size
        self.styles = None if styles is None else [str(s) for s in styles]
        self.dataset_options = dict(dataset_options or {})
        self._root = root  # a build folder (the configs pass paths.emoji_dir, the one training reads)

    @cached_property
    def root(self) -> Path:
        from cliplab.data.emoji import check_manifest, dataset_dir

        if self._root is None:
            return dataset_dir(self.image_size, **self.dataset_options)
        check_manifest(Path(self._root), "python -m cliplab.data.prepare")
        return Path(self._root)

    @cached_property
    def templates(self) -> list[str] | dict[str, list[str]]:
        templates = _as_list(self._templates) or read_lines(self.root / "templates.txt")
        if self.class_prompts is None:
            return templates
        descriptions = self._subgroup_descriptions()
        return {
            name: [t.format(d) for d in descriptions[name] for t in templates] for name in self.classnames
        }

    def _subgroup_descriptions(self) -> dict[str, list[str]]:
        """Each group's name, then its subgroups' names, from the build's table of the held-out artist's
        images (every concept, so every subgroup)."""
        table = self.root / "val.csv"
        if not table.is_file():
            raise BenchmarkError(f"emoji build has no {table.name} (rebuild: python -m cliplab.data.prepare)")
        descriptions = {name: [name] for name in self.classnames}
        with table.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                own = descriptions.get(row["group"].lower())
                subgroup = row["subgroup"].replace("-", " ")
                if own is not None and subgroup not in own:
                    own.append(subgroup)
        return descriptions

    def _load(self):
        table = self.root / f"zeroshot_{self.split}.csv"
        if not table.is_file():
            raise BenchmarkError(f"emoji zero-shot split {self.split!r} not found: {table}")
        names = read_lines(self.root / f"classnames_{self.split}.txt")
        with table.open(newline="", encoding="utf-8") as f:
            rows = [row for row in csv.DictReader(f) if self.styles is None or row["style"] in self.styles]
        if not rows and self.styles is not None:
            raise BenchmarkError(
                f"emoji zero-shot split {self.split!r} has no images in styles {self.styles}"
            )
        return names, [(str(self.root / row["image"]), int(row["label"])) for row in rows]

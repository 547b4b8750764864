"""Notebooks: committed without outputs, and each runs top to bottom on small artifacts made here."""

import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name}: strip outputs before committing"
            )


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
def tiny_checkpoint(cfg_factory, tmp_path) -> Path:
    """An (untrained) checkpoint of the smallest sweep scale, in the layout Lightning writes."""
    import pytorch_lightning as pl
    import torch

    from cliplab.pipeline import build_module

    module = build_module(cfg_factory(["experiment=scaling_emoji", "scale=s0"]))
    module.configure_model()
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
    from cliplab.data.prepare import prepare

    prepare()
    book = execute(
        ROOT / "notebooks" / "zeroshot_retrieval.ipynb",
        {"CLIPLAB_NB_CKPT": str(tiny_checkpoint), "CLIPLAB_NB_LIMIT": "32"},
        tmp_path,
    )
    out = text_outputs(book)
    assert "top-1" in out and "text_to_image_R@1" in out


def test_scaling_notebook_runs(tmp_path):
    from tests.test_sweeps import make_job

    sweep = tmp_path / "sweep"
    make_job(sweep, "scale=s0", 32, 800, 0.10)
    make_job(sweep, "scale=s1", 64, 1600, 0.20)
    book = execute(ROOT / "notebooks" / "scaling_analysis.ipynb", {"CLIPLAB_NB_SWEEP": str(sweep)}, tmp_path)
    assert "2 jobs" in text_outputs(book) and "R^2" in text_outputs(book)

"""The evaluation callbacks on two ranks (DDP, gloo, CPU) log exactly what one process computes.

Each rank evaluates its share of the zero-shot images (the counts differ between ranks, and one image is
unreadable), of the validation retrieval pairs (12 and 11), of a pairs table and of the probes' images;
the metrics are summed or gathered across ranks. Every evals evaluator kind gives the same numbers on 1
and 2 ranks.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cliplab.data.transforms import eval_transform
from cliplab.eval.benchmarks import ImageFolderBenchmark
from cliplab.eval.evaluator import EvalContext
from cliplab.eval.run import evaluate_retrieval, evaluate_zeroshot
from tests import _mp_eval_script as script
from tests._torchrun import torchrun
from tests.evals_fixtures import pairs_table

SCRIPT = Path(script.__file__)
CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]


def noise_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(
            3 + label
        ):  # 3..9 images per class, 42 readable in all, split unevenly with the broken one
            pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "cat" / "broken.png").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def two_ranks(tmp_path_factory, request):
    """Under DDP and under FSDP2, where every forward is a collective: ranks with unequal shares of the
    images must still run the same number of forwards."""
    root = tmp_path_factory.mktemp("mp_eval")
    bench_dir = noise_folder(root / "bench")
    pairs_csv = pairs_table(root / "pairs", n=11)
    torchrun(SCRIPT, bench_dir, root / "out", pairs_csv, request.param)
    return bench_dir, json.loads((root / "out" / "result.json").read_text()), pairs_csv


def test_zeroshot_callback_on_two_ranks_equals_one_process(two_ranks):
    bench_dir, result, _ = two_ranks
    benchmark = ImageFolderBenchmark("folder", bench_dir, script.TEMPLATES)
    single = evaluate_zeroshot(
        script.eval_model(), script.tokenizer, benchmark, eval_transform(script.IMAGE_SIZE), batch_size=4
    )
    assert single["n_images"] == 42 and single["n_skipped"] == 1
    assert 0.0 < single["top1"] < 1.0 and single["top5"] < 1.0, (
        "a random model: the metrics must not be trivially 0 or 1"
    )
    for key in ("top1", "top5", "mean_recall"):
        assert result["metrics"][f"zeroshot/folder/{key}"] == pytest.approx(single[key], abs=1e-6), key


def test_retrieval_callback_on_two_ranks_equals_one_process(two_ranks):
    _, result, _ = two_ranks
    pairs = script.retrieval_pairs()
    batches = [pairs[i : i + 5] for i in range(0, len(pairs), 5)]
    with torch.no_grad():
        single = evaluate_retrieval(script.eval_model(), batches)
    assert result["gallery"] == [script.RETRIEVAL_PAIRS, script.RETRIEVAL_PAIRS]
    assert 0.0 < single["image_to_text_R@5"] < 1.0
    for key, value in single.items():
        assert result["metrics"][f"retrieval/val/{key}"] == pytest.approx(value, abs=1e-6), key


def test_every_evaluator_on_two_ranks_equals_one_process(two_ranks):
    bench_dir, result, pairs_csv = two_ranks
    context = EvalContext(script.tokenizer, eval_transform(script.IMAGE_SIZE))
    model = script.eval_model()
    for entry in script.eval_entries(bench_dir, pairs_csv):
        single = entry.evaluator.run(model, context)
        assert single, entry.prefix
        for key, value in single.items():
            logged = result["metrics"][entry.key(key)]
            assert logged == pytest.approx(value, abs=1e-6), entry.key(key)
    probe = result["metrics"]
    assert 1 / 7 - 0.15 < probe["linear_probe/folder/top1"] < 1 / 7 + 0.35  # noise images: near chance


def test_eval_entry_point_on_two_ranks_equals_one(tmp_path):
    """`torchrun --nproc_per_node 2 src/eval.py ...` writes the rows one process writes."""
    from hydra import compose, initialize_config_dir

    from cliplab.eval.run import evaluate
    from tests.evals_fixtures import class_folder
    from tests.test_eval_cli import CONF, ROOT, _checkpoint

    ckpt = _checkpoint(tmp_path)
    root = class_folder(tmp_path / "classes", 3, 7, separable=False)
    table = pairs_table(tmp_path / "pairs", n=9)
    overrides = [f"ckpt_path={ckpt}", "evals=[retrieval,linear_probe]", f"evals.retrieval.data.path={table}",
                 f"evals.linear_probe.root={root}", "device=cpu", "num_workers=0"]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, "src/eval.py", *overrides, f"output_dir={tmp_path / 'two'}"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "CLIPLAB_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )  # its Hydra run folder goes under tmp_path too
    assert proc.returncode == 0, proc.stderr[-3000:]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        evaluate(compose("eval", overrides=[*overrides, f"output_dir={tmp_path / 'one'}"]))
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert two["rows"] == one["rows"] and len(one["rows"]) == 8
    assert (one["produced_by"]["world_size"], two["produced_by"]["world_size"]) == (1, 2)
    assert two["produced_by"]["weights_sha256"] == one["produced_by"]["weights_sha256"]
    # the retrieval sheet ranks the gathered gallery: the same captions, images and picture on 2 ranks
    assert two["pictures"] == one["pictures"] and "retrieval_sheet_retrieval.png" in one["pictures"]
    sheet = [(tmp_path / d / "retrieval_sheet_retrieval.png").read_bytes() for d in ("one", "two")]
    assert sheet[0] == sheet[1]

"""Fine-tuning + WiSE-FT (`src/finetune.py`) on the tiny model and a tiny synthetic labelled folder: the head
starts as the zero-shot classifier, alpha=0 is exactly the zero-shot model (weights and accuracies),
alpha=1 exactly the fine-tuned one; bad settings stop with one line."""

import pytest
import torch
from omegaconf import OmegaConf

from cliplab.checkpoints.load import load_module
from cliplab.data.transforms import eval_transform
from cliplab.eval.run import evaluate_zeroshot
from cliplab.eval.zeroshot import build_zeroshot_classifier, zeroshot_metrics
from cliplab.finetune.head import ImageClassifier, ZeroShotHead
from cliplab.finetune.loop import accuracy
from cliplab.finetune.run import finetune
from cliplab.finetune.wiseft import interpolate
from cliplab.utils.errors import ConfigError
from cliplab.validate import check_finetune
from tests.conftest import compose_config
from tests.test_eval_cli import _checkpoint, make_folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    ckpt = _checkpoint(tmp)
    task, other = make_folder(tmp / "task", per_class=5), make_folder(tmp / "other", per_class=2)
    cfg = compose_config(
        [f"pretrained={ckpt}", f"finetune.data.root={task}", "finetune.holdout=0.4", "evals=[folder]",
         f"evals.folder.benchmark.root={other}", "finetune.steps=3", "finetune.batch_size=4", "finetune.lr=1e-3",
         "finetune.warmup_steps=1", "finetune.precision=fp32", "alphas=[0,0.5,1]", "num_workers=0",
         "device=cpu", "save_finetuned=false"],
        config_name="finetune", output_dir=tmp / "out",
    )  # fmt: skip
    result = finetune(cfg)
    module = load_module(ckpt)  # a fresh copy of the pretrained model: the zero-shot oracle
    return result, module.model.eval(), module.tokenizer, cfg, tmp / "out"


def _task(cfg):
    from hydra.utils import instantiate

    from cliplab.finetune.data import TaskSplits

    return TaskSplits(instantiate(cfg.finetune.data), holdout=cfg.finetune.holdout, seed=cfg.seed)


def test_head_starts_as_the_zero_shot_classifier(run):
    result, model, tokenizer, cfg, _ = run
    task = _task(cfg)
    weights = build_zeroshot_classifier(model, tokenizer, task.classnames, task.templates)
    assert torch.equal(result["zero_shot_state"]["head.weight"], weights.T)
    assert not result["zero_shot_state"]["head.bias"].any()


def test_alpha_zero_is_the_zero_shot_model(run):
    result, model, tokenizer, cfg, _ = run
    zero = interpolate(result["zero_shot_state"], result["finetuned_state"], 0.0)
    visual = {k.removeprefix("visual."): v for k, v in zero.items() if k.startswith("visual.")}
    assert all(torch.equal(v, model.visual.state_dict()[k]) for k, v in visual.items())
    task = _task(cfg)
    _, test_set = task.datasets(eval_transform(64), eval_transform(64))
    images = torch.stack([test_set[i][0] for i in range(len(test_set))])
    labels = torch.tensor([test_set[i][1] for i in range(len(test_set))])
    weights = build_zeroshot_classifier(model, tokenizer, task.classnames, task.templates)
    with torch.no_grad():
        expected = zeroshot_metrics(model.encode_image(images), weights, labels)["top1"]
    row = result["rows"][0]
    # the same count of correct images (torchmetrics reports it in float32; 1/6 apart per image here)
    assert row["alpha"] == 0.0 and row["task"]["top1"] == pytest.approx(expected, abs=1e-6)
    from hydra.utils import instantiate

    other = instantiate(cfg.evals.folder.benchmark)
    zs = evaluate_zeroshot(model, tokenizer, other, eval_transform(64), batch_size=256)
    assert row["zeroshot"]["folder"] == zs


def test_alpha_one_is_the_fine_tuned_model(run):
    result, model, tokenizer, cfg, _ = run
    zero_shot, finetuned = result["zero_shot_state"], result["finetuned_state"]
    assert not torch.equal(zero_shot["head.weight"], finetuned["head.weight"]), (
        "fine-tuning must move the head"
    )
    moved = [k for k in finetuned if k.startswith("visual.") and not torch.equal(finetuned[k], zero_shot[k])]
    assert moved, "fine-tuning must move the image tower"
    one = interpolate(zero_shot, finetuned, 1.0)
    assert all(torch.equal(one[k], finetuned[k]) for k in finetuned)
    half = interpolate(zero_shot, finetuned, 0.5)["head.weight"]
    torch.testing.assert_close(half, (zero_shot["head.weight"] + finetuned["head.weight"]) / 2)
    task = _task(cfg)
    head = ZeroShotHead(torch.zeros(finetuned["head.weight"].shape[::-1]), 1.0)
    classifier = ImageClassifier(model.visual, head)
    classifier.load_state_dict(finetuned)
    _, test_set = task.datasets(eval_transform(64), eval_transform(64))
    assert result["rows"][-1]["alpha"] == 1.0
    assert result["rows"][-1]["task"] == accuracy(classifier, test_set)
    model.visual.load_state_dict(
        {k.removeprefix("visual."): v for k, v in zero_shot.items() if "visual." in k}
    )


def test_report_files(run):
    _, _, _, _, out = run
    table = (out / "wiseft.md").read_text()
    assert table.count("\n") == 2 + 3 and "| 0.50 |" in table and "folder top-1 (zero-shot)" in table
    rows = OmegaConf.load(out / "wiseft.json")["rows"]
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert (out / "wiseft.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_pretrained_is_named_with_an_example(tmp_path):
    cfg = compose_config(["finetune.data.root=y"], "finetune", tmp_path)
    with pytest.raises(ConfigError, match=r"^pretrained is required: python src/.*pretrained=logs/"):
        check_finetune(cfg)


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("alphas=[0,1.5]", "must be numbers in [0, 1]"),
        ("finetune.steps=0", "finetune.steps=0 must be a positive integer"),
        ("finetune.holdout=0", "finetune.holdout=0 must be in (0, 1)"),
        ("finetune.precision=fp8", "finetune.precision='fp8'"),
    ],
)
def test_bad_finetune_settings_stop_with_one_line(tmp_path, override, words):
    cfg = compose_config(["pretrained=x", "finetune.data.root=y", override], "finetune", tmp_path)
    with pytest.raises(ConfigError) as err:
        check_finetune(cfg)
    assert words in str(err.value) and "\n" not in str(err.value)

"""The evals registry: each evaluator against an outside oracle, k-shot with a real accuracy check,
scheduling in training, and the results layout."""

import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import PredefinedSplit

from cliplab.data.table_source import TableSource
from cliplab.data.transforms import eval_transform
from cliplab.eval.evaluator import EvalContext, Evaluator, Schedule, build_entries
from cliplab.eval.evaluators.probe import KShotProbe, LinearProbe, c_values
from cliplab.eval.evaluators.retrieval import PairedRetrieval
from cliplab.utils.errors import ConfigError
from tests.evals_fixtures import IMAGE_SIZE, PixelModel, char_tokenizer, class_folder, pairs_table


def context():
    return EvalContext(char_tokenizer, eval_transform(IMAGE_SIZE))


def test_linear_probe_matches_scikit_learn_on_the_same_features(tmp_path):
    """Oracle: LogisticRegressionCV picking C on the same held-out split (PredefinedSplit), refit on all."""
    root = tmp_path / "probe"
    class_folder(root / "train", classes=4, per_class=20, separable=True, noise=150, seed=1)
    class_folder(root / "test", classes=4, per_class=10, separable=True, noise=150, seed=2)
    probe = LinearProbe(root, val_fraction=0.25, c_grid={"low": -3, "high": 3, "steps": 7}, seed=0)
    model = PixelModel()
    got = probe.run(model, context())

    def feats(split):
        ds = probe.sets[split].dataset(eval_transform(IMAGE_SIZE))
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        y = np.array([ds[i][1] for i in range(len(ds))])
        with torch.no_grad():
            return F.normalize(model.encode_image(x), dim=-1).numpy(), y

    (x_train, y_train), (x_test, y_test) = feats("train"), feats("test")
    held_out = np.zeros(len(y_train), dtype=int) - 1  # -1: always in the fitting part
    order = np.random.default_rng(0).permutation(len(y_train))
    held_out[order[: round(0.25 * len(y_train))]] = 0  # the documented rule: a seeded 25 % of training
    oracle = LogisticRegressionCV(Cs=c_values(-3, 3, 7), cv=PredefinedSplit(held_out), max_iter=1000,
                                  refit=True, random_state=0, scoring="accuracy").fit(x_train, y_train)  # fmt: skip
    expected = float((oracle.predict(x_test) == y_test).mean())
    assert got["top1"] == pytest.approx(expected, abs=1 / len(y_test) + 1e-9)  # at most one test image apart
    assert 0.25 < got["top1"] < 1.0, "weak signal: neither chance nor perfect"
    assert probe.provenance()["best_C"] == pytest.approx(oracle.C_[0])
    assert probe.chance_levels()["top1"] == 0.25


def test_retrieval_matches_clip_benchmark_on_the_same_data(tmp_path):
    cb = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
    table = pairs_table(tmp_path / "pairs", n=23)
    model = PixelModel()
    evaluator = PairedRetrieval(TableSource(table), ks=(1, 5, 10), batch_size=5)
    got = evaluator.run(model, context())

    from PIL import Image

    rows = [line.split(",", 1) for line in table.read_text().splitlines()[1:]]
    transform = eval_transform(IMAGE_SIZE)
    items = [(transform(Image.open(table.parent / img).convert("RGB")), [cap]) for img, cap in rows]
    loader = torch.utils.data.DataLoader(
        items, batch_size=5, collate_fn=lambda b: (torch.stack([i for i, _ in b]), [t for _, t in b])
    )
    oracle = cb.evaluate(model, loader, char_tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    for k in (1, 5, 10):  # CLIP_benchmark names them by what is retrieved: "image retrieval" is text->image
        assert got[f"text_to_image_R@{k}"] == pytest.approx(oracle[f"image_retrieval_recall@{k}"])
        assert got[f"image_to_text_R@{k}"] == pytest.approx(oracle[f"text_retrieval_recall@{k}"])
    assert 0 < got["text_to_image_R@1"] < 1
    assert evaluator.chance_levels()["text_to_image_R@5"] == pytest.approx(5 / 23)
    assert len(evaluator.provenance()["data_version"]) == 16  # the table's own hash


def test_retrieval_reads_every_training_source(tmp_path):
    """The same pairs as a table, a caption folder and webdataset shards give the same recall."""
    from cliplab.data.folder_source import FolderSource
    from cliplab.data.webdataset_source import WebDatasetSource

    table = pairs_table(tmp_path / "pairs", n=8)
    (tmp_path / "shards").mkdir()
    for line in table.read_text().splitlines()[1:]:
        image, caption = line.split(",", 1)
        (table.parent / image).with_suffix(".txt").write_text(caption)
        # webdataset layout, the PNG bytes kept (cliplab.data.shards would re-encode them as JPEG)
        with tarfile.open(tmp_path / "shards" / f"shard-{int(image[:-4]) // 3:02d}.tar", "a") as tar:
            tar.add(table.parent / image, arcname=f"{int(image[:-4]):04d}.png")
            tar.add(table.parent / image.replace(".png", ".txt"), arcname=f"{int(image[:-4]):04d}.txt")
    by_table = PairedRetrieval(TableSource(table)).run(PixelModel(), context())
    assert 0 < by_table["text_to_image_R@1"] < 1
    for source in (FolderSource(table.parent), WebDatasetSource(str(tmp_path / "shards"), shuffle=False)):
        # the same pairs, maybe in another order: recall does not depend on it
        assert PairedRetrieval(source).run(PixelModel(), context()) == pytest.approx(by_table), source


@pytest.mark.parametrize("separable", [True, False])
def test_kshot_learns_separable_classes_and_stays_at_chance_on_noise(tmp_path, separable):
    root = class_folder(tmp_path / "k", classes=5, per_class=40, separable=separable)
    probe = KShotProbe(root, shots=(1, 4, 16), seeds=2, c_grid={"low": 0, "high": 1, "steps": 2})
    got = probe.run(PixelModel(), context())
    assert set(got) == {f"{k}shot_top1_{s}" for k in (1, 4, 16) for s in ("mean", "std")} | {"zeroshot_top1"}
    means = [got[f"{k}shot_top1_mean"] for k in (1, 4, 16)]
    if separable:
        assert got["16shot_top1_mean"] >= 0.9 and got["4shot_top1_mean"] >= 0.8
    else:  # labels carry nothing: about 1 / 5
        assert abs(np.mean(means) - 0.2) < 0.12, means
    assert all(got[f"{k}shot_top1_std"] >= 0 for k in (1, 4, 16))
    assert probe.chance_levels()["1shot_top1_mean"] == 0.2


def test_every_shipped_entry_builds_an_evaluator(tmp_path):
    from tests.conftest import CONF, compose_config

    names = sorted(p.stem for p in (CONF / "evals").glob("*.yaml") if p.stem != "none")
    (tmp_path / "p.csv").write_text("image,caption\n")
    overrides = [f"evals=[{','.join(names)}]", f"evals.folder.benchmark.root={tmp_path}",
                 f"evals.retrieval.data.path={tmp_path}/p.csv", f"evals.linear_probe.root={tmp_path}",
                 f"evals.kshot.root={tmp_path}"]  # fmt: skip
    cfg = compose_config(overrides, output_dir=tmp_path)
    entries = build_entries(cfg.evals)
    assert [e.name for e in entries] == list(cfg.evals)
    assert all(isinstance(e.evaluator, Evaluator) for e in entries)
    assert {e.prefix for e in entries if e.name.startswith("emoji")} == {
        "zeroshot/emoji", "zeroshot/emoji_group", "zeroshot/emoji_group_subgroups", "zeroshot/emoji_novel",
        "zeroshot/emoji_novel_seen_styles", "zeroshot/emoji_novel_heldout_style"}  # fmt: skip


def test_missing_data_stops_at_start_up(tmp_path):
    from cliplab.utils.errors import CliplabError

    for node, message in (
        ({"_target_": "cliplab.eval.evaluators.probe.LinearProbe", "root": tmp_path / "no"}, "not found"),
        ({"_target_": "cliplab.eval.evaluators.retrieval.PairedRetrieval", "data": f"{tmp_path}/x.csv"},
         "retrieval data not found"),
    ):  # fmt: skip
        with pytest.raises(CliplabError, match=message):
            build_entries({"x": node})


def test_bad_entries_stop_with_one_line():
    with pytest.raises(ConfigError, match="no _target_"):
        build_entries({"x": {"prefix": "x"}})
    with pytest.raises(ConfigError, match="unknown keys"):
        build_entries({"x": {"_target_": "builtins.dict", "schedule": {"every": 3}}})
    with pytest.raises(ConfigError, match="has no run"):
        build_entries({"x": {"_target_": "builtins.dict"}})


def test_schedule():
    s = Schedule(every_n_epochs=2, every_n_steps=5, at_end=False)
    assert [s.due_at_epoch(e) for e in range(4)] == [False, True, False, True]
    assert [s.due_at_step(t) for t in (0, 5, 6, 10)] == [False, True, False, True]
    assert not Schedule().due_at_epoch(0) and not Schedule().due_at_step(5)


def test_emoji_groups_described_by_their_unicode_subgroups(emoji_ready):
    from cliplab.eval.benchmarks import BenchmarkError, EmojiBenchmark

    plain = EmojiBenchmark(split="group", root=emoji_ready)
    described = EmojiBenchmark(split="group", class_prompts="subgroups", root=emoji_ready)
    assert described.classnames == plain.classnames and len(plain.classnames) == 9
    assert described.samples == plain.samples
    prompts, templates = described.templates, plain.templates
    assert list(prompts) == plain.classnames
    nature = prompts["animals & nature"]
    # the group's own name first, then each subgroup once, every template filled with each
    assert nature[: len(templates)] == [t.format("animals & nature") for t in templates]
    assert [t.format("animal mammal") for t in templates] == [p for p in nature if "animal mammal" in p]
    assert len(nature) == len(templates) * 9  # the name and Unicode's 8 subgroups of the group
    assert not any("flag" in p for p in prompts["food & drink"])
    with pytest.raises(BenchmarkError, match="class_prompts must be one of"):
        EmojiBenchmark(split="group", class_prompts="keywords", root=emoji_ready)
    with pytest.raises(BenchmarkError, match="needs split=group"):
        EmojiBenchmark(split="style", class_prompts="subgroups", root=emoji_ready)


def test_emoji_novel_concepts_split_by_style_for_effective_robustness(emoji_ready):
    """The two robustness axes: the same unseen concepts, drawn by the training styles and by the held-out one."""
    from cliplab.eval.benchmarks import BenchmarkError, EmojiBenchmark

    training = ["openmoji", "openmoji-line", "noto", "fluent-flat"]
    every = EmojiBenchmark(split="novel", root=emoji_ready)
    seen = EmojiBenchmark(split="novel", styles=training, root=emoji_ready)
    held_out = EmojiBenchmark(split="novel", styles=["twemoji"], root=emoji_ready)
    assert seen.classnames == held_out.classnames == every.classnames
    assert len(seen.samples) + len(held_out.samples) == len(every.samples)
    assert all("/twemoji/" in str(p) for p, _ in held_out.samples)
    assert not any("/twemoji/" in str(p) for p, _ in seen.samples)
    with pytest.raises(BenchmarkError, match="no images in styles"):
        _ = EmojiBenchmark(split="novel", styles=["crayon"], root=emoji_ready).samples

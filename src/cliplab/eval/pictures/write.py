"""Which pictures an evaluation's outputs allow, written as PNGs beside results.md, and their W&B copies.

`outputs` maps an entry name (`ema/<name>` for the averaged weights) to what its evaluator kept for the
pictures (`picture_data()`): {"per_class": PerClassAccuracy, "retrieval": RetrievalExamples,
"kshot": KShotCurve}, and the training run's {"loss_curves": LossCurves} (LossCurveRecorder). The k-shot
curve's zero-shot line is the probe's own zero-shot top-1 on its test images (KShotProbe's `zeroshot_top1`),
else that of an entry of the same weights whose class names are the probe folder's (e.g. evals=[folder,kshot]
on one folder, the kshot entry's zero_shot_templates null).
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from cliplab.eval.pictures.data import KShotCurve, LossCurves, PerClassAccuracy, RetrievalExamples
from cliplab.eval.pictures.kshot import draw_kshot, matching_sentence
from cliplab.eval.pictures.loss_curves import draw_loss_curves
from cliplab.eval.pictures.per_class import draw_per_class
from cliplab.eval.pictures.retrieval_sheet import draw_retrieval_sheet

log = logging.getLogger(__name__)


@dataclass
class Picture:
    caption: str
    file: Path
    columns: list[str]  # the same numbers as a table (W&B)
    rows: list[list]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _weights(name: str) -> str:
    return name.split("/", 1)[0] + "/" if name.startswith("ema/") else ""


def zero_shot_partner(name: str, curve: KShotCurve, outputs: dict) -> tuple[str, PerClassAccuracy] | None:
    """The zero-shot entry of the same weights on the k-shot probe's classes (same names, same order)."""
    for other, data in outputs.items():
        per_class = data.get("per_class")
        same_weights = _weights(other) == _weights(name)
        if per_class is not None and same_weights and list(per_class.classnames) == list(curve.classnames):
            return other, per_class
    return None


def write_pictures(outputs: dict[str, dict], out_dir: str | Path) -> list[Picture]:
    """Draws every picture `outputs` allow into `out_dir`; returns them in entry order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures = []
    for name, data in outputs.items():
        try:
            pictures += _draw(name, data, outputs, out_dir)
        except Exception as err:  # a picture never costs the results table of a finished run
            log.warning("%s: no pictures (%s: %s)", name, type(err).__name__, err)
    return pictures


def _draw(name: str, data: dict, outputs: dict[str, dict], out_dir: Path) -> list[Picture]:
    drawn = []
    if data.get("per_class") is not None:
        drawn.append(_per_class(name, data["per_class"], out_dir))
    if data.get("retrieval") is not None and data["retrieval"].captions:
        drawn.append(_retrieval_sheet(name, data["retrieval"], out_dir))
    if data.get("kshot") is not None and data["kshot"].shots:
        drawn.append(_kshot(name, data["kshot"], outputs, out_dir))
    if data.get("loss_curves") is not None:
        drawn.append(_loss_curves(data["loss_curves"], out_dir))
    return drawn


def _loss_curves(curves: LossCurves, out_dir: Path) -> Picture:
    file = draw_loss_curves(curves, out_dir / "loss_curves.png", "Training and validation loss")
    return Picture("Training and validation loss", file, ["samples_seen", "split", "loss"], curves.rows())


def _per_class(name: str, per_class: PerClassAccuracy, out_dir: Path) -> Picture:
    file = draw_per_class(per_class, out_dir / f"per_class_{_slug(name)}.png",
                          f"Per-class zero-shot accuracy: {name}")  # fmt: skip
    rows = [[c, a, n] for c, a, n in zip(per_class.classnames, per_class.accuracy, per_class.support)]
    return Picture(f"Per-class zero-shot accuracy ({name})", file, ["class", "top1", "images"], rows)


def _retrieval_sheet(name: str, examples: RetrievalExamples, out_dir: Path) -> Picture:
    file = draw_retrieval_sheet(examples, out_dir / f"retrieval_sheet_{_slug(name)}.png",
                                f"Caption to image: {name}")  # fmt: skip
    rows = [[c, r] for c, r in zip(examples.captions, examples.rank_of_correct())]
    caption = (
        f"Retrieval sheet ({name}): top-{len(examples.ranked[0])} images per caption, the right one framed"
    )
    return Picture(caption, file, ["caption", "rank of its image (empty: not shown)"], rows)


def _kshot(name: str, curve: KShotCurve, outputs: dict[str, dict], out_dir: Path) -> Picture:
    """The zero-shot line: the probe's own (same test images), else an entry's on the same classes."""
    partner = None if curve.zero_shot is not None else zero_shot_partner(name, curve, outputs)
    if curve.zero_shot is None and partner is None:
        log.info("%s: no zero-shot measure on the same classes, so the k-shot curve has no zero-shot line "
                 "(keep the kshot entry's zero_shot_templates, or add a zero-shot entry on its folder)", name)  # fmt: skip
    zero_shot = curve.zero_shot if partner is None else partner[1].top1
    source = "zero-shot on the same test images" if curve.zero_shot is not None else (partner and partner[0])
    title = f"Zero-shot vs k-shot: {name}" + (f" ({source})" if source else "")
    file = draw_kshot(curve, zero_shot, out_dir / f"kshot_vs_zeroshot_{_slug(name)}.png", title)
    rows = [[k, m, s, zero_shot] for k, m, s in zip(curve.shots, curve.mean, curve.std)]
    return Picture(f"Zero-shot vs k-shot ({name}): {matching_sentence(curve, zero_shot)}", file,
                   ["k", "top1_mean", "top1_std", "zero_shot_top1"], rows)  # fmt: skip


def pictures_markdown(pictures: list[Picture], relative_to: Path) -> str:
    """A `## Pictures` section linking each PNG relative to the Markdown file's folder."""
    if not pictures:
        return ""
    lines = ["", "## Pictures", ""]
    for picture in pictures:
        link = Path(picture.file).resolve().relative_to(Path(relative_to).resolve())
        lines += [f"### {picture.caption}", "", f"![{picture.caption}]({link.as_posix()})", ""]
    return "\n".join(lines)


def log_pictures(pictures: list[Picture], loggers) -> int:
    """Each picture as an image and its numbers as a table on every logger that takes them (the
    WandbLogger: wandb.Image, wandb.Table); returns how many loggers took them."""
    took = 0
    for logger in loggers:
        if not hasattr(logger, "log_image"):
            continue
        for picture in pictures:
            key = Path(picture.file).stem
            logger.log_image(key=f"pictures/{key}", images=[str(picture.file)], caption=[picture.caption])
            if hasattr(logger, "log_table"):
                logger.log_table(key=f"pictures/{key}_table", columns=picture.columns, data=picture.rows)
        took += 1
    return took

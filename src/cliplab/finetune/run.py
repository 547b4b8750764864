"""`src/finetune.py`: fine-tune a pretrained CLIP's image tower with a zero-shot-initialised head, then
report WiSE-FT's weight interpolation over `alphas`: the task's accuracy and the zero-shot accuracy on the
other benchmarks (the zero-shot entries of `evals`) at every alpha."""

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cliplab.data.transforms import eval_transform, train_transform
from cliplab.eval.run import evaluate_zeroshot, load_model
from cliplab.eval.zeroshot import ClassifierCache, build_zeroshot_classifier
from cliplab.finetune.data import TaskSplits
from cliplab.finetune.head import ImageClassifier, ZeroShotHead
from cliplab.finetune.loop import accuracy, train_classifier
from cliplab.finetune.report import markdown_table, write_report
from cliplab.finetune.wiseft import interpolate
from cliplab.models.clip import MAX_LOGIT_SCALE

log = logging.getLogger("cliplab")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def zero_shot_classifier(
    model, tokenizer, task: TaskSplits, device, text_batch_size: int = 1024
) -> ImageClassifier:
    """The model's image tower with a head equal to the zero-shot classifier of the task's classes."""
    weights = build_zeroshot_classifier(
        model, tokenizer, task.classnames, task.templates, text_batch_size, device
    )
    scale = float(model.logit_scale.detach().clamp(0, MAX_LOGIT_SCALE).exp())
    return ImageClassifier(model.visual, ZeroShotHead(weights, scale)).to(device)


def _clone(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


def wiseft_rows(
    model, tokenizer, classifier, zero_shot, finetuned, test_set, benchmarks, transform, cfg, device
):
    """One row per alpha: the task's top-1 (the classifier's head) and each benchmark's zero-shot metrics
    (the interpolated image tower with the model's own text tower)."""
    caches = {name: ClassifierCache() for name in benchmarks}  # the text tower is frozen: built once each
    rows = []
    for alpha in cfg.alphas:
        classifier.load_state_dict(interpolate(zero_shot, finetuned, float(alpha)))  # model.visual too
        row = {
            "alpha": float(alpha),
            "task": accuracy(classifier, test_set, cfg.batch_size, cfg.num_workers, device),
        }
        row["zeroshot"] = {
            name: evaluate_zeroshot(
                model, tokenizer, bench, transform, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                cache=caches[name], text_batch_size=cfg.text_batch_size,
            )
            for name, bench in benchmarks.items()
        }  # fmt: skip
        log.info("alpha %.2f: task top-1 %.4f, %s", alpha, row["task"]["top1"],
                 {n: round(m["top1"], 4) for n, m in row["zeroshot"].items()})  # fmt: skip
        rows.append(row)
    return rows


def finetune(cfg: DictConfig) -> dict:
    from cliplab.models.lora import has_lora, merge_lora
    from cliplab.validate import check_finetune

    check_finetune(cfg)
    torch.manual_seed(cfg.seed)
    source = OmegaConf.create(
        {
            "ckpt_path": cfg.pretrained,
            "allow_unsafe_pickle": cfg.allow_unsafe_pickle,
            "output_dir": cfg.output_dir,
        }
    )
    model, tokenizer, image_size, description = load_model(source)
    if has_lora(model):  # a LoRA run: fine-tune its merged weights
        merge_lora(model)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval().requires_grad_(False)
    ft = cfg.finetune
    task = TaskSplits(
        instantiate(ft.data),
        instantiate(ft.test) if ft.get("test") else None,
        holdout=ft.get("holdout", 0.2),
        seed=cfg.seed,
    )
    classifier = zero_shot_classifier(model, tokenizer, task, device, cfg.text_batch_size)
    zero_shot = _clone(classifier.state_dict())
    classifier.requires_grad_(True)  # the image tower and the head fine-tune; the text tower stays frozen
    train_set, test_set = task.datasets(train_transform(image_size), eval_transform(image_size))
    log.info(
        "fine-tuning on %d images (%d classes), testing on %d",
        len(train_set),
        len(task.classnames),
        len(test_set),
    )
    losses = train_classifier(
        classifier, train_set, steps=ft.steps, batch_size=ft.batch_size, lr=ft.lr, weight_decay=ft.weight_decay,
        warmup_steps=ft.warmup_steps, num_workers=cfg.num_workers, seed=cfg.seed, device=device,
        autocast_dtype=_AUTOCAST[ft.precision],
    )  # fmt: skip
    classifier.requires_grad_(False)
    finetuned = _clone(classifier.state_dict())
    # retention benchmarks: the zero-shot classification entries of `evals` (others have no benchmark)
    benchmarks = {
        name: instantiate(entry.benchmark)
        for name, entry in (cfg.get("evals") or {}).items()
        if "benchmark" in entry
    }
    rows = wiseft_rows(
        model,
        tokenizer,
        classifier,
        zero_shot,
        finetuned,
        test_set,
        benchmarks,
        eval_transform(image_size),
        cfg,
        device,
    )
    task_name = ft.data.get("name", "task")
    meta = {
        "pretrained": description,
        "task": task_name,
        "train_images": len(train_set),
        "test_images": len(test_set),
        "steps": ft.steps,
        "batch_size": ft.batch_size,
        "lr": ft.lr,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "device": device,
    }
    out_dir = Path(cfg.output_dir)
    paths = write_report(rows, task_name, list(benchmarks), out_dir, meta)
    if cfg.get("save_finetuned", True):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in finetuned.items()}, str(out_dir / "finetuned.safetensors"))
    print(markdown_table(rows, task_name, list(benchmarks)), end="")
    print(f"results written to {paths['md'].parent}")
    return {"rows": rows, "meta": meta, "zero_shot_state": zero_shot, "finetuned_state": finetuned}

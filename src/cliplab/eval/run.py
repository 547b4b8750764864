"""Evaluation loops: a model (+ tokenizer) on zero-shot benchmarks and on paired retrieval data, and
`evaluate(cfg)`, the body of `src/eval.py` (every `evals` entry on a checkpoint).

Plain functions shared by the evaluators (cliplab.eval.evaluators) and `src/eval.py`. Each rank takes
every world_size-th batch of images; counts and metrics are summed across ranks (torchmetrics and
`torch.distributed`) so every rank returns the same numbers.
"""

import logging
import re
from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from cliplab.data.transforms import CLIP_MEAN, CLIP_STD
from cliplab.eval.benchmarks import BenchmarkError, ZeroShotBenchmark, collate_skipping
from cliplab.eval.features import rank_share
from cliplab.eval.lockstep import Lockstep, blank_images
from cliplab.eval.pictures.data import RetrievalExamples
from cliplab.eval.retrieval import retrieval_metrics, spread_queries, thumbnails, top_images
from cliplab.eval.zeroshot import ClassifierCache, ZeroShotAccumulator, build_zeroshot_classifier
from cliplab.losses.gather import gather_rows
from cliplab.utils.dist import dist_info

log = logging.getLogger(__name__)


def _model_device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(module.parameters())
    return param.device, param.dtype


@torch.no_grad()
def evaluate_zeroshot(
    model: nn.Module,
    tokenizer,
    benchmark: ZeroShotBenchmark,
    transform,
    batch_size: int = 256,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    cache: ClassifierCache | None = None,
    text_batch_size: int = 1024,
    per_class: bool = False,
) -> dict[str, float]:
    """top1, top5, mean_recall, n_images and n_skipped (unreadable images) of one benchmark; with
    `per_class`, also `per_class_recall` and `per_class_support` (lists, one entry per class)."""
    was_training = model.training
    model.eval()
    try:
        device, dtype = _model_device_dtype(getattr(model, "visual", model))
        args = (model, tokenizer, benchmark.classnames, benchmark.templates, text_batch_size, device)
        classifier = cache.get(*args) if cache is not None else build_zeroshot_classifier(*args)
        dataset = benchmark.dataset(transform)
        # whole batches round robin: each batch holds the images it holds on one rank
        shard = Subset(dataset, rank_share(len(dataset), batch_size, rank, world_size))
        loader = DataLoader(
            shard, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skipping
        )
        accumulator = ZeroShotAccumulator(len(benchmark.classnames)).to(device)
        lockstep = Lockstep(model, len(loader), lambda: model.encode_image(blank_images(model, dtype)))
        seen = skipped = 0
        for images, labels, n_skipped in loader:
            skipped += n_skipped
            if images is None:
                lockstep.skipped()
                continue
            features = model.encode_image(images.to(device, dtype, non_blocking=True))
            accumulator.update(features, classifier, labels.to(device))
            seen += len(labels)
        lockstep.finish()
        counts = torch.tensor([seen, skipped], device=device)
        if dist_info().distributed:
            dist.all_reduce(counts)
        seen, skipped = (int(c) for c in counts)
        if seen == 0:  # raised on every rank alike, after the collective, so no rank hangs
            raise BenchmarkError(f"benchmark {benchmark.name!r}: none of {skipped} images could be read")
        if skipped:
            log.warning(
                "benchmark %r: skipped %d unreadable images of %d", benchmark.name, skipped, seen + skipped
            )
        metrics = {**accumulator.compute(), "n_images": seen, "n_skipped": skipped}
        if per_class:
            metrics["per_class_recall"], metrics["per_class_support"] = accumulator.per_class_recall()
        return metrics
    finally:
        model.train(was_training)


class RetrievalAccumulator:
    """Collects normalised image and caption features per batch; `compute()` gathers all ranks' galleries.

    `update(model, images [B,3,H,W], tokens [B,L] or [B,K,L])`: K captions per image; all-zero token rows in
    a `[B, K, L]` batch are padding (images with fewer captions) and are ignored.

    With `examples` > 0 it also keeps a small thumbnail of every image and the tokens of every caption, and
    `compute(decode)` leaves in `self.examples` the top `shown` images of that many captions spread over
    the gallery (cliplab.eval.pictures' retrieval sheet). `examples: 0` keeps nothing more.
    """

    def __init__(self, ks=(1, 5, 10), examples: int = 0, shown: int = 5, thumbnail_size: int = 48,
                 mean=CLIP_MEAN, std=CLIP_STD):  # fmt: skip
        self.ks = tuple(ks)
        self.n_examples, self.shown, self.thumbnail_size = int(examples), int(shown), int(thumbnail_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.examples: RetrievalExamples | None = None
        self.reset()

    def reset(self) -> None:
        self.image_feats, self.text_feats, self.owners, self.n_images = [], [], [], 0
        self.thumbs, self.tokens = [], []

    def _keep(self, images: torch.Tensor, tokens: torch.Tensor) -> None:
        if self.n_examples <= 0:
            return
        self.thumbs.append(thumbnails(images, self.thumbnail_size, self.mean, self.std))
        fixed = tokens.new_zeros((tokens.shape[0], CAPTION_TOKENS))  # one width on every batch and rank
        width = min(CAPTION_TOKENS, tokens.shape[1])
        fixed[:, :width] = tokens[:, :width]
        self.tokens.append(fixed)

    @torch.no_grad()
    def update(self, model: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> None:
        device, dtype = _model_device_dtype(getattr(model, "visual", model))
        tokens = tokens.to(device)
        several = tokens.dim() == 3
        tokens = tokens if several else tokens[:, None]
        flat = tokens.reshape(-1, tokens.shape[-1])
        # padding rows exist only in [B, K, L] batches; with one caption per image every row is real
        real = (
            flat.abs().sum(dim=1) > 0
            if several
            else torch.ones(flat.shape[0], dtype=torch.bool, device=device)
        )
        owner = (
            torch.arange(images.shape[0], device=device).repeat_interleave(tokens.shape[1]) + self.n_images
        )
        self.image_feats.append(F.normalize(model.encode_image(images.to(device, dtype)).float(), dim=-1))
        self.text_feats.append(F.normalize(model.encode_text(flat[real]).float(), dim=-1))
        self.owners.append(owner[real])
        self.n_images += images.shape[0]
        self._keep(images.to(device), flat[real])

    @staticmethod
    def idle_forward(model: nn.Module) -> None:
        """What `update` runs, on one blank pair: a sharded model's stand-in for a batch (eval.lockstep)."""
        blank = blank_images(model)
        model.encode_image(blank)
        context = getattr(model, "context_length", None) or 1
        model.encode_text(torch.zeros(1, context, dtype=torch.long, device=blank.device))

    @torch.no_grad()
    def add(
        self, image_features: torch.Tensor, text_features: torch.Tensor, images=None, tokens=None
    ) -> None:
        """Features already computed for a batch of pairs (one caption per image, row i with row i); the
        batch's `images` and `tokens` too when examples are kept."""
        owner = torch.arange(image_features.shape[0], device=image_features.device) + self.n_images
        self.image_feats.append(F.normalize(image_features.detach().float(), dim=-1))
        self.text_feats.append(F.normalize(text_features.detach().float(), dim=-1))
        self.owners.append(owner)
        self.n_images += image_features.shape[0]
        if images is not None and tokens is not None:
            tokens = tokens[:, 0] if tokens.dim() == 3 else tokens
            self._keep(images.to(image_features.device), tokens.to(image_features.device))

    def compute(self, decode=None) -> dict[str, float]:
        """Recall@k over every rank's pairs; with examples kept, also fills `self.examples` (captions
        written out with `decode(token ids) -> str`, else numbered)."""
        if not self.image_feats:
            raise ValueError("retrieval evaluation got no batches")
        images, texts, owner = (torch.cat(x) for x in (self.image_feats, self.text_feats, self.owners))
        if dist_info().distributed:  # shift this rank's image numbers past those of lower ranks
            counts = gather_rows(torch.tensor([self.n_images], device=images.device))
            owner = owner + int(counts[: dist.get_rank()].sum())
        images, texts, owner = gather_rows(images), gather_rows(texts), gather_rows(owner)
        if self.n_examples > 0 and len(self.thumbs) == len(self.image_feats):
            thumbs, tokens = gather_rows(torch.cat(self.thumbs)), gather_rows(torch.cat(self.tokens))
            self.examples = self._examples(images, texts, owner, thumbs, tokens, decode)
        return retrieval_metrics(images, texts, owner, ks=self.ks)

    def _examples(self, images, texts, owner, thumbs, tokens, decode) -> RetrievalExamples:
        # picked by caption content, not gallery position: the same captions on any number of ranks
        order = torch.argsort(caption_keys(tokens), stable=True)
        queries = [int(order[i]) for i in spread_queries(texts.shape[0], self.n_examples)]
        ranked = top_images(images, texts, queries, self.shown)
        shown = sorted({i for row in ranked for i in row} | {int(owner[q]) for q in queries})
        return RetrievalExamples(
            captions=[caption_text(decode, tokens[q]) if decode else f"caption {q}" for q in queries],
            ranked=ranked,
            correct=[int(owner[q]) for q in queries],
            thumbnails={i: thumbs[i].cpu().numpy() for i in shown},
            gallery=int(images.shape[0]),
        )


CAPTION_TOKENS = 77  # caption tokens kept for the retrieval sheet's text (longer ones are cut there only)


def caption_keys(tokens: torch.Tensor) -> torch.Tensor:
    """A fixed pseudo-random int64 key per caption from its token ids (wrapping arithmetic)."""
    weights = torch.randint(1, 2**62, (tokens.shape[1],), generator=torch.Generator().manual_seed(0))
    return (tokens.long().cpu() * weights).sum(dim=1)


def caption_text(decode, ids: torch.Tensor) -> str:
    """A caption's text from its token ids, without padding or start/end-of-text markers."""
    ids = [int(i) for i in ids.tolist() if int(i) != 0]
    try:
        text = decode(ids, skip_special_tokens=True)  # Hugging Face tokenizers
    except TypeError:
        text = decode(ids)
    return re.sub(r"<\|?(start|end)_?of_?text\|?>", " ", text).strip()


@torch.no_grad()
def evaluate_retrieval(model: nn.Module, batches: Iterable, ks=(1, 5, 10)) -> dict[str, float]:
    """Recall@k over `(images, tokens)` batches (see `RetrievalAccumulator`); every rank passes its own."""
    was_training = model.training
    model.eval()
    try:
        accumulator = RetrievalAccumulator(ks)
        for batch in batches:
            accumulator.update(model, batch[0], batch[1])
        return accumulator.compute()
    finally:
        model.train(was_training)


def load_model(cfg) -> tuple[nn.Module, object, int, str]:
    """`(model, tokenizer, image_size, description)` from `cfg.ckpt_path` (a cliplab checkpoint file, an
    FSDP2 or DeepSpeed checkpoint folder consolidated on load, or a run directory: its newest complete
    checkpoint; the model is rebuilt from the config stored in it) or `cfg.open_clip_ckpt` (via
    cliplab.models.interop). Pickles that could run code are refused unless `allow_unsafe_pickle`."""
    from cliplab.utils.errors import ConfigError

    if cfg.get("ckpt_path"):
        from pathlib import Path

        from cliplab.checkpoints.find import resolve_ckpt_path
        from cliplab.checkpoints.load import load_module

        if str(cfg.ckpt_path) == "last" or not Path(cfg.ckpt_path).exists():
            raise ConfigError(f"checkpoint not found: {cfg.ckpt_path} (give a checkpoint or a run directory)")
        path = resolve_ckpt_path(cfg.ckpt_path, cfg.get("output_dir", "."))
        module = load_module(path, allow_unsafe_pickle=cfg.get("allow_unsafe_pickle", False))
        model_cfg = module.hparams.model
        image_size = model_cfg.get("image_size", model_cfg.get("image_tower", {}).get("image_size"))
        return module.model, module.tokenizer, int(image_size), str(path)
    if cfg.get("open_clip_ckpt"):
        from cliplab.models.build import build_clip, build_tokenizer
        from cliplab.models.interop import load_openclip_checkpoint

        if not cfg.get("model"):
            raise ConfigError("open_clip_ckpt needs its architecture: add model=<name>, e.g. model=vit_b32")
        model = build_clip(cfg.model)
        load_openclip_checkpoint(
            model, cfg.open_clip_ckpt, allow_unsafe_pickle=cfg.get("allow_unsafe_pickle", False)
        )
        tokenizer = build_tokenizer(cfg.model)
        return model, tokenizer, int(cfg.model.image_size), str(cfg.open_clip_ckpt)
    raise ConfigError("nothing to evaluate: give ckpt_path=<lightning .ckpt> or open_clip_ckpt=<file>")


def world_size_env() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _init_ranks(device: str) -> tuple[int, int]:
    """`(rank, world_size)`; under torchrun (WORLD_SIZE > 1) joins the process group first."""
    import os

    world = world_size_env()
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), world


def evaluate(cfg) -> dict[str, dict[str, float]]:
    """`src/eval.py`: load the model, run every `cfg.evals` entry once, write results.json, results.md and
    the pictures beside them (cliplab.eval.report's layout, the one training writes). Under torchrun each rank evaluates its share
    and rank 0 writes. Returns `{entry name: metrics}`."""
    from pathlib import Path

    from cliplab.data.transforms import eval_transform
    from cliplab.eval.evaluator import EvalContext, build_entries
    from cliplab.eval.pictures.write import write_pictures
    from cliplab.eval.provenance import file_sha256, weights_sha256
    from cliplab.eval.report import result_rows, write_results
    from cliplab.utils.errors import ConfigError

    if not cfg.get("evals"):
        raise ConfigError("no evaluations chosen: e.g. evals=[emoji,fashion_mnist] or evals=[retrieval]")
    entries = build_entries(cfg.evals)
    model, tokenizer, image_size, source = load_model(cfg)
    device = cfg.get("device") or "auto"
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    joined = world_size_env() > 1 and not dist.is_initialized()
    rank, world_size = _init_ranks(device)
    if device == "cuda":
        device = f"cuda:{torch.cuda.current_device()}"
    model = model.to(device).eval()
    context = EvalContext(tokenizer, eval_transform(image_size), rank, world_size)
    results, logged, chance = {}, {}, {}
    for entry in entries:
        results[entry.name] = entry.evaluator.run(model, context)
        logged.update({entry.key(m): v for m, v in results[entry.name].items()})
        chance.update({entry.key(m): c for m, c in entry.evaluator.chance_levels().items()})
    if rank == 0:
        produced_by = {
            "model": source,
            "checkpoint_sha256": file_sha256(source) if Path(source).exists() else None,
            "weights_sha256": weights_sha256(model),
            "image_size": image_size,
            "device": str(device),
            "world_size": world_size,
            "evals": {e.name: {"prefix": e.prefix, **e.evaluator.provenance()} for e in entries},
        }
        rows = result_rows(logged, chance, [f"{e.prefix}/" for e in entries])
        outputs = {
            e.name: e.evaluator.picture_data() for e in entries if hasattr(e.evaluator, "picture_data")
        }
        pictures = write_pictures(outputs, Path(cfg.output_dir))
        json_path = write_results(rows, Path(cfg.output_dir), produced_by, pictures)
        print(f"results written to {json_path.parent}")
    if joined:
        dist.destroy_process_group()
    return results

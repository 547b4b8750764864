"""Image <-> text retrieval recall@k, with any number of captions per image.

Conventions of the CLIP papers: text->image R@k is the share of captions whose own image ranks in the top k
images; image->text R@k is the share of images with at least one of their captions in the top k captions.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image_index: torch.Tensor | Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
) -> dict[str, float]:
    """`image_to_text_R@k` and `text_to_image_R@k` for each k (k above the gallery size counts everything).

    `text_to_image_index[t]` is the row of `image_features` that caption t describes. Scores are computed in
    chunks of `chunk_size` queries so a 25k x 125k COCO-size evaluation fits in memory.
    """
    images = F.normalize(image_features.float(), dim=-1)
    texts = F.normalize(text_features.float(), dim=-1)
    owner = torch.as_tensor(text_to_image_index, dtype=torch.long, device=texts.device)
    n_images, n_texts = images.shape[0], texts.shape[0]
    if owner.shape != (n_texts,):
        raise ValueError(f"text_to_image_index has shape {tuple(owner.shape)}, expected ({n_texts},)")
    if n_texts == 0 or n_images == 0:
        raise ValueError("retrieval needs at least one image and one caption")
    if owner.min() < 0 or owner.max() >= n_images:
        raise ValueError(f"text_to_image_index points outside the {n_images} images")
    if torch.bincount(owner, minlength=n_images).min() == 0:
        raise ValueError(
            "every image needs at least one caption (an image without one can never be retrieved)"
        )

    max_k = max(ks)
    # text -> image: rank of the caption's own image among all images
    t2i_hits = {k: 0 for k in ks}
    for start in range(0, n_texts, chunk_size):
        scores = texts[start : start + chunk_size] @ images.T
        top = scores.topk(min(max_k, n_images), dim=1).indices
        match = top == owner[start : start + chunk_size, None]
        for k in ks:
            t2i_hits[k] += int(match[:, :k].any(dim=1).sum())

    # image -> text: is any of the image's captions among its top k captions?
    i2t_hits = {k: 0 for k in ks}
    for start in range(0, n_images, chunk_size):
        scores = images[start : start + chunk_size] @ texts.T
        top = scores.topk(min(max_k, n_texts), dim=1).indices
        rows = torch.arange(start, start + scores.shape[0], device=owner.device)
        match = owner[top] == rows[:, None]
        for k in ks:
            i2t_hits[k] += int(match[:, :k].any(dim=1).sum())

    metrics = {}
    for k in ks:
        metrics[f"image_to_text_R@{k}"] = i2t_hits[k] / n_images
        metrics[f"text_to_image_R@{k}"] = t2i_hits[k] / n_texts
    return metrics


def spread_queries(n_texts: int, count: int) -> list[int]:
    """`count` caption indices spread evenly over the gallery (the same ones every run)."""
    count = min(int(count), n_texts)
    return [] if count <= 0 else sorted({int(i * n_texts / count) for i in range(count)})


@torch.no_grad()
def top_images(
    image_features: torch.Tensor, text_features: torch.Tensor, queries: Sequence[int], k: int = 5
) -> list[list[int]]:
    """For each query caption, the indices of its k best-scoring images, best first."""
    images = F.normalize(image_features.float(), dim=-1)
    texts = F.normalize(text_features[list(queries)].float(), dim=-1)
    return (texts @ images.T).topk(min(k, images.shape[0]), dim=1).indices.tolist()


def thumbnails(images: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised images `[B, 3, H, W]` back to pixels: uint8 `[B, size, size, 3]` (area-downsampled)."""
    x = images.detach().float()
    x = (
        x * torch.tensor(std, device=x.device)[:, None, None]
        + torch.tensor(mean, device=x.device)[:, None, None]
    )
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()

"""Whether anomalies were located, not only found: pixel AUROC and PRO against ground-truth masks.

  pixel AUROC  every pixel of every image one sample, its mask value the label
  PRO          per-region overlap (Bergmann et al., 2021): at each threshold, the mean over the
               masks' regions (8-connected) of the fraction of each region flagged, against the
               false-positive rate over every normal pixel; the area under that curve up to 30 %
               FPR, divided by 0.3, as MVTec AD's evaluation and anomalib (AUPRO) compute it. A
               small scratch counts as much as a large stain, which pixel AUROC lets the stain outweigh.

Masks are found as MVTec AD keeps them: test/<defect>/000.png has ground_truth/<defect>/000_mask.png
beside test/; images in good/ or normal/ have none (every pixel normal). Written here, as
metrics.py is, and checked in tests against cases computed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aecli.scoring.metrics import _check

PRO_LIMIT = 0.3  # the FPR up to which PRO is integrated: MVTec AD's and anomalib's
# Larger masks are compared on a grid of at most this side, each cell its pixels' maximum (a
# scratch thinner than a cell still marks it): a test set of 1024x1024 photos stays in memory.
EVAL_SIDE = 256


@dataclass
class PixelEvaluation:
    auroc: float
    pro: float  # normalised area under the PRO curve up to PRO_LIMIT
    images: int
    regions: int  # defect regions in the masks


def mask_path(images, i: int) -> Path | None:
    """Image i's ground-truth mask in MVTec AD's layout, where the file exists."""
    path = images.path(i)
    if path is None:
        return None
    relative = images.relative(i)
    root = path.parents[len(relative.parts) - 1]  # the input directory (test/)
    mask = root.parent / "ground_truth" / relative.parent / f"{relative.stem}_mask.png"
    return mask if mask.is_file() else None


def find_masks(images, truth: np.ndarray) -> list[Path | None] | None:
    """Each anomalous image's mask (None for the normal ones); None unless every anomalous image has one."""
    truth = np.asarray(truth)
    if not truth.any() or truth.all():
        return None
    masks = [mask_path(images, i) if truth[i] else None for i in range(len(images))]
    return masks if all(m is not None for m, t in zip(masks, truth) if t) else None


def regions(mask: np.ndarray) -> np.ndarray:
    """Connected regions of a boolean (H, W) mask, 8-connected: 0 outside, 1..n inside.

    Joins runs of set pixels row by row (union-find), so a long scratch costs its runs, not its pixels.
    """
    parent: list[int] = []

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    runs, previous = [], []  # (row, start, end) and the runs of the row above, with their ids
    for y, row in enumerate(np.asarray(mask, dtype=bool)):
        edges = np.flatnonzero(np.diff(np.r_[0, row.astype(np.int8), 0]))
        current = []
        for start, end in zip(edges[::2].tolist(), edges[1::2].tolist()):
            k = len(parent)
            parent.append(k)
            for s, e, j in previous:
                if s <= end and e >= start:  # touching, diagonals included
                    parent[root(j)] = root(k)
            current.append((start, end, k))
            runs.append((y, start, end, k))
        previous = current
    out = np.zeros(np.shape(mask), dtype=np.int32)
    numbers: dict[int, int] = {}
    for y, start, end, k in runs:
        out[y, start:end] = numbers.setdefault(root(k), len(numbers) + 1)
    return out


def pixel_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """metrics.auroc for millions of pixels: the same tied-rank formula, vectorised."""
    scores, labels = _check(np.ravel(scores), np.ravel(labels))
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    ends = np.r_[starts[1:], len(ordered)]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pro_curve(scores: np.ndarray, region_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False-positive rates and mean region overlaps at every distinct threshold, from (0, 0).

    `region_ids` numbers each pixel's region, unique over all images, 0 for normal pixels. A
    region's pixel adds 1 / (regions x its size) to the overlap once flagged, so sorting all
    pixels by score once gives the whole curve.
    """
    scores, ids = np.ravel(scores).astype(np.float64), np.ravel(region_ids)
    sizes = np.bincount(ids)
    n_regions = int((sizes[1:] > 0).sum())
    normal = ids == 0
    if not n_regions or not normal.any():
        raise ValueError("PRO needs both defect regions and normal pixels")
    weight = np.where(normal, 0.0, 1.0 / (n_regions * sizes[ids].clip(1)))
    order = np.argsort(-scores, kind="mergesort")
    ordered = scores[order]
    last = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]  # the end of each run of ties
    fpr = np.cumsum(normal[order])[last] / normal.sum()
    overlap = np.cumsum(weight[order])[last]
    return np.r_[0.0, fpr], np.r_[0.0, overlap]


def pro_score(scores: np.ndarray, region_ids: np.ndarray, limit: float = PRO_LIMIT) -> float:
    """The area under the PRO curve from FPR 0 to `limit` (the last segment cut there), over `limit`."""
    fpr, overlap = pro_curve(scores, region_ids)
    inside = int(np.searchsorted(fpr, limit, side="right"))
    x, y = fpr[:inside], overlap[:inside]
    if inside < len(fpr) and fpr[inside - 1] < limit:
        step = (limit - fpr[inside - 1]) / (fpr[inside] - fpr[inside - 1])
        x, y = np.r_[x, limit], np.r_[y, overlap[inside - 1] + step * (overlap[inside] - overlap[inside - 1])]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / limit)


def read_mask(path: Path) -> np.ndarray:
    from aecli.data.images import read_image

    return (read_image(path).float().mean(0) > 0.5).numpy()


def on_grid(heat, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A map resized to its mask's size, then both on a grid of at most EVAL_SIDE (cell maxima)."""
    import torch
    import torch.nn.functional as F

    h, w = mask.shape
    heat = F.interpolate(heat.float()[None, None], size=(h, w), mode="bilinear", align_corners=False)
    target = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    if max(h, w) > EVAL_SIDE:
        grid = (max(1, round(h * EVAL_SIDE / max(h, w))), max(1, round(w * EVAL_SIDE / max(h, w))))
        heat, target = F.adaptive_max_pool2d(heat, grid), F.adaptive_max_pool2d(target, grid)
    return heat[0, 0].numpy(), target[0, 0].numpy() > 0.5


def evaluate_pixels(loaded, images, truth: np.ndarray, **options) -> PixelEvaluation | None:
    """Pixel AUROC and PRO of the model's anomaly maps (maps.anomaly_map) over every image that
    scores, against their masks; None where some anomalous image has no mask. Options as score_batches.

    A second pass over the images, made only when masks are found; under torchrun each process
    maps its block and every one gets the whole.
    """
    from aecli import distributed
    from aecli.scoring.maps import anomaly_map
    from aecli.scoring.scores import score_batches

    masks = find_masks(images, truth)
    if masks is None:
        return None
    local = []  # per image: its map and its regions (numbered from 1 in each image)
    for batch, _, recon in score_batches(loaded, images, **options):
        for x, r, i in zip(batch.pixels, recon, batch.index.tolist()):
            heat = anomaly_map(loaded, x, r)
            mask = read_mask(masks[i]) if masks[i] is not None else np.zeros(tuple(heat.shape), bool)
            heat, mask = on_grid(heat, mask)
            local.append((heat.ravel(), regions(mask).ravel()))
    mapped = distributed.concat(local) if distributed.active() else local
    ids, offset = [], 0
    for _, found in mapped:  # numbered over all images: region k of one is not region k of another
        ids.append(np.where(found > 0, found + offset, 0))
        offset += int(found.max(initial=0))
    if not offset:
        return None
    scores, region_ids = np.concatenate([heat for heat, _ in mapped]), np.concatenate(ids)
    return PixelEvaluation(pixel_auroc(scores, region_ids > 0), pro_score(scores, region_ids), len(mapped), offset)

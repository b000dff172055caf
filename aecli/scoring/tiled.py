"""Scoring images larger than a patch-trained model the way it was trained: tiled at native resolution.

A model trained on 32x32 crops of photographs has only ever seen 32x32 pixels at their own scale;
resizing a whole photograph down to 32x32 shows it something it never learnt, and its calibration
(made on crops) then means nothing. So each image is cut into model-sized tiles on a grid (the
last row and column flush with the edges), every tile is scored, and the image's score for each
metric is its **highest tile score**: a defect anywhere flags the image, as in anomaly inspection.
The reconstruction is stitched back at full size (overlaps averaged) for the heatmaps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from aecli.data.images import to_channels, to_size
from aecli.infer.tiles import starts


def tile_grid(height: int, width: int, tile: int) -> list[tuple[int, int]]:
    """Top-left corners of non-overlapping tiles covering the image; the last ones flush with its edges."""
    return [(y, x) for y in starts(height, tile, tile) for x in starts(width, tile, tile)]


def fit_for_tiles(image: torch.Tensor, tile: int, channels: int) -> torch.Tensor:
    """The image with the model's channels, at its own size; one smaller than a tile is resized up
    to it, as training scaled up photos smaller than a crop."""
    x = to_channels(image, channels)
    return to_size(x, tile) if min(x.shape[-2:]) < tile else x


def score_tiled(
    score_tiles: Callable[[torch.Tensor], tuple[dict[str, torch.Tensor], torch.Tensor]],
    x: torch.Tensor, tile: int, batch_size: int = 256,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:  # fmt: skip
    """One image's scores (the maximum over its tiles, per metric, shape (1,)) and its reconstruction.

    `score_tiles` maps a (T, C, tile, tile) batch to its per-tile scores by metric and its
    reconstructions; tiles go through it `batch_size` at a time.
    """
    corners = tile_grid(x.shape[-2], x.shape[-1], tile)
    raw: dict[str, list[torch.Tensor]] = {}
    stitched, covered = torch.zeros_like(x), torch.zeros_like(x[:1])
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        scores, recon = score_tiles(torch.stack([x[:, y : y + tile, c : c + tile] for y, c in chunk]))
        for name, values in scores.items():
            raw.setdefault(name, []).append(values)
        for (y, c), r in zip(chunk, recon.cpu()):
            stitched[:, y : y + tile, c : c + tile] += r
            covered[:, y : y + tile, c : c + tile] += 1
    return {name: torch.cat(v).max().reshape(1) for name, v in raw.items()}, stitched / covered

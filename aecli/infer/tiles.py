"""Running a fixed-size model over images of any size: overlapping tiles, blended without seams.

Each tile's output is weighted by a smooth window (a raised cosine that never reaches zero) and
the weighted sum is divided by the summed weights, so every pixel is an average of the tiles
that cover it, with tile borders counting least: no visible seams, and exact where tiles agree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets along one axis: every `stride`, plus one flush with the end."""
    if length <= tile:
        return [0]
    offsets = list(range(0, length - tile, stride))
    return offsets + [length - tile]


def window(tile: int, device: torch.device | None = None) -> torch.Tensor:
    """(tile, tile) weights: sin² from the border to the centre, positive everywhere."""
    t = (torch.arange(tile, dtype=torch.float32, device=device) + 0.5) / tile
    w = torch.sin(torch.pi * t) ** 2 + 1e-3
    return w[:, None] * w[None, :]


def apply_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int,
    overlap: float = 0.5,
    batch_size: int = 64,
) -> torch.Tensor:
    """fn over a (C, H, W) image in tile x tile pieces; fn maps (B, C, tile, tile) to the same shape.

    An image smaller than a tile is reflect-padded (edge-padded where too small to reflect)
    up to it and cropped back.
    """
    c, h, w = image.shape
    pad_h, pad_w = max(0, tile - h), max(0, tile - w)
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        padded = F.pad(image[None], (0, pad_w, 0, pad_h), mode=mode)[0]
        return apply_tiled(fn, padded, tile, overlap, batch_size)[:, :h, :w]
    stride = max(1, int(round(tile * (1 - overlap))))
    corners = [(y, x) for y in starts(h, tile, stride) for x in starts(w, tile, stride)]
    weight = window(tile, image.device)
    out = torch.zeros(c, h, w, device=image.device)
    total = torch.zeros(1, h, w, device=image.device)
    for i in range(0, len(corners), batch_size):
        chunk = corners[i : i + batch_size]
        pieces = torch.stack([image[:, y : y + tile, x : x + tile] for y, x in chunk])
        results = fn(pieces).float()
        for (y, x), result in zip(chunk, results):
            out[:, y : y + tile, x : x + tile] += result * weight
            total[:, y : y + tile, x : x + tile] += weight
    return out / total

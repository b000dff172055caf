"""Pictures for people: grids of images written as PNG, atomically."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from aecli import runtime
from aecli.config import ModelConfig
from aecli.io.files import atomic_output

GRID_LIMIT = 256  # a grid is for a quick look: more images than this make it unreadable


def save_grid(path: Path, images: torch.Tensor | list[torch.Tensor], nrow: int = 8, padding: int = 2) -> None:
    """One PNG of (B, C, H, W) images in [0, 1] (or a list of any sizes), `nrow` to a row, on white."""
    from torchvision.utils import make_grid, save_image

    if isinstance(images, list):
        images = grid_of(images)
    grid = make_grid(images[:GRID_LIMIT].detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=1.0)
    with atomic_output(Path(path)) as f:
        save_image(grid, f, format="png")


@torch.no_grad()
def write_preview(
    path: Path, model, images, rows: np.ndarray, config: ModelConfig, device: torch.device, count: int = 8
) -> None:
    """Rows of inputs (then their corrupted copies, for a denoiser) and of its outputs."""
    batch = images.load(np.asarray(rows[:count]), config.channels, config.image_size, config.resize)
    model.eval()
    save_grid(path, preview_rows(model, batch.pixels.to(device), device), nrow=len(batch.pixels))


@torch.no_grad()
def preview_rows(model, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The images x, then their corrupted copies (a denoiser's, with the same noise every call),
    then the outputs of the model (in eval mode): one batch on the CPU, to be drawn len(x) to a row."""
    shown = [x]
    if model.capabilities.denoise:
        torch.manual_seed(0)
        x = model.corrupt(x)
        shown.append(x)
    with runtime.autocast(device):
        shown.append(model(x))
    return torch.cat([s.float().cpu() for s in shown])


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] to an (H, W) or (H, W, C) uint8 array, rounded as PNG writers do."""
    array = image.detach().float().cpu().clamp(0, 1).mul(255).add_(0.5).to(torch.uint8)
    return array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()


def save_png(path: Path, image: torch.Tensor) -> None:
    """One (C, H, W) image as an 8-bit PNG (grey stays grey), written atomically."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as f:
        Image.fromarray(to_uint8(image)).save(f, format="png")


def grid_of(images: list[torch.Tensor], size: int | None = None) -> torch.Tensor:
    """Images of any size and channels as one (B, C, S, S) batch a grid can show (the first's size)."""
    from aecli.data.images import to_channels, to_size

    channels = max(x.shape[0] for x in images)
    size = size or images[0].shape[-1]
    return torch.stack([to_size(to_channels(x.float().cpu(), channels), size) for x in images])


def numbered(out: Path, count: int) -> list[Path]:
    """OUT/000000.png, 000001.png, ...: as many digits as `count` needs, at least six."""
    width = max(6, len(str(count - 1)))
    return [Path(out) / f"{i:0{width}d}.png" for i in range(count)]


def write_numbered(
    batches: Iterable[torch.Tensor], count: int, out: Path | None, grid: Path | None, nrow: int = 8
) -> int:
    """Images batch by batch as OUT/000000.png, 000001.png, ... and the first GRID_LIMIT in one grid."""
    names = numbered(out, count) if out is not None else []
    shown, done = [], 0
    for batch in batches:
        for image in batch:
            if out is not None:
                save_png(names[done], image)
            if len(shown) < GRID_LIMIT:
                shown.append(image)
            done += 1
    if grid:
        save_grid(grid, shown, nrow)
    return done


def save_rows(path: Path, rows: list[list[torch.Tensor]]) -> None:
    """A grid with one row per list (e.g. inputs, outputs, references), all at the first image's size."""
    size = rows[0][0].shape[-1]
    flat = [x for row in rows for x in row]
    save_grid(path, grid_of(flat, size), nrow=len(rows[0]))

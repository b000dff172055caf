"""Pictures for people: grids of images written as PNG, atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aecli import runtime
from aecli.config import ModelConfig
from aecli.files import atomic_output


def save_grid(path: Path, images: torch.Tensor, nrow: int = 8, padding: int = 2) -> None:
    """One PNG of (B, C, H, W) images in [0, 1], `nrow` to a row, on a white background."""
    from torchvision.utils import make_grid, save_image

    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=1.0)
    with atomic_output(Path(path)) as f:
        save_image(grid, f, format="png")


@torch.no_grad()
def write_preview(path: Path, model, images, rows: np.ndarray, config: ModelConfig, device: torch.device, count: int = 8) -> None:
    """Rows of inputs (then their corrupted copies, for a denoiser) and of reconstructions."""
    from aecli.noise import corrupt

    batch = images.load(np.asarray(rows[:count]), config.channels, config.image_size)
    x = batch.pixels.to(device)
    model.eval()
    shown = [x]
    if config.variant == "denoising":
        torch.manual_seed(0)
        x = corrupt(x, config.noise, config.sigma)
        shown.append(x)
    with runtime.autocast(device):
        shown.append(model(x))
    save_grid(path, torch.cat([s.float().cpu() for s in shown]), nrow=len(batch.pixels))

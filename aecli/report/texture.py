"""A woven texture with scratches planted in it, in MVTec AD's folder layout: what `ae demo` inspects.

The bundled sample holds whole garments, not surfaces, so the tour makes its own: a weave of two
sine gratings with grain, the same for every image but shifted, and thin bright scratches that a
plain autoencoder's image score misses (`ae train` with default settings on the 24 good images:
image AUROC 0.39 on the test set). Seeded, so every demo draws the same set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aecli.io.pictures import save_png


def weave(rng: np.random.Generator, size: int) -> np.ndarray:
    """One (size, size) grey image in [0, 1]: crossing gratings at a random phase, with grain."""
    yy, xx = np.mgrid[:size, :size]
    phase = rng.uniform(0, 2 * np.pi, 2)
    cloth = 0.5 + 0.2 * np.sin(xx * 0.8 + phase[0]) + 0.15 * np.sin(yy * 0.55 + phase[1])
    return np.clip(cloth + 0.05 * rng.standard_normal(cloth.shape), 0, 1)


def scratched(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The image with a thin bright scratch (12-24 pixels, at a random slope) away from its edges,
    and the scratch's mask."""
    size = image.shape[0]
    mask = np.zeros(image.shape, bool)
    length = int(rng.integers(12, 25))
    y0, x0 = rng.integers(size // 5, size - size // 5 - length, 2)
    slope = rng.uniform(-0.6, 0.6)
    for k in range(length):
        mask[int(round(y0 + slope * k)), x0 + k] = True
    out = image.copy()
    out[mask] = 0.95
    return out, mask


def write_set(root: Path, *, train: int = 24, test: int = 6, size: int = 64, seed: int = 0) -> None:
    """root/train/good, root/test/good and root/test/scratch with root/ground_truth/scratch masks."""
    rng = np.random.default_rng(seed)
    for folder, count in (("train/good", train), ("test/good", test)):
        for i in range(count):
            _save(root / folder / f"{i:03d}.png", weave(rng, size))
    for i in range(test):
        image, mask = scratched(weave(rng, size), rng)
        _save(root / "test" / "scratch" / f"{i:03d}.png", image)
        _save(root / "ground_truth" / "scratch" / f"{i:03d}_mask.png", mask.astype(float))


def _save(path: Path, image: np.ndarray) -> None:
    save_png(path, torch.from_numpy(image).float()[None])

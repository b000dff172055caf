"""Training on random crops: each image of a set becomes K patches of P x P pixels per epoch.

So a denoiser for photographs trains on a folder of photos of any size, and then cleans whole
photos tile by tile (see tiles.py). Crop positions are a function of (seed, epoch, patch), so a
resumed run crops what an uninterrupted one would; validation patches stay fixed (epoch -1).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from aecli.data.inputs import Batch, ImageSet


class Patches:
    """An ImageSet seen as len(images) * per_image patches; patch i comes from image i // per_image."""

    def __init__(self, images: ImageSet, size: int, per_image: int, seed: int = 0):
        self.images, self.size, self.per_image, self.seed = images, size, per_image, seed
        self.epoch = 0
        self.description = f"{images.description} ({per_image} patches of {size}x{size} per image)"
        self.non_images = images.non_images

    def __len__(self) -> int:
        return len(self.images) * self.per_image

    @property
    def parts(self) -> list:
        return self.images.parts

    def name(self, i: int) -> str:
        return f"{self.images.name(i // self.per_image)}@patch{i % self.per_image}"

    def label(self, i: int) -> int | None:
        return self.images.label(i // self.per_image)

    def first_shape(self, strict: bool = False) -> tuple[int, int, int]:
        c, _, _ = self.images.first_shape(strict)
        return c, self.size, self.size

    def load(
        self,
        indices: np.ndarray,
        channels: int | None,
        size: int | None,
        resize: str | None = "stretch",
        strict: bool = False,
    ) -> Batch:
        """Read each source image once, then cut its patches; `size` is the patch size already."""
        sources = np.unique(np.asarray(indices) // self.per_image)
        batch = self.images.load(sources, channels, None, resize, strict)
        if batch.error:
            return batch
        loaded = {int(i): x for i, x in zip(batch.index.tolist(), batch.pixels)}
        pieces, kept = [], []
        for i in np.asarray(indices).tolist():
            image = loaded.get(i // self.per_image)
            if image is not None:
                pieces.append(self._crop(image, i))
                kept.append(i)
        pixels = torch.stack(pieces) if pieces else torch.empty(0, channels or 1, self.size, self.size)
        return Batch(pixels, torch.tensor(kept, dtype=torch.long), batch.skipped)

    def _crop(self, image: torch.Tensor, i: int) -> torch.Tensor:
        _, h, w = image.shape
        if min(h, w) < self.size:  # too small to crop: scale up, keeping the aspect ratio
            scale = self.size / min(h, w)
            h, w = max(self.size, round(h * scale)), max(self.size, round(w * scale))
            image = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1)
        rng = np.random.default_rng([self.seed, self.epoch + 1, i])
        y, x = int(rng.integers(0, h - self.size + 1)), int(rng.integers(0, w - self.size + 1))
        return image[:, y : y + self.size, x : x + self.size]

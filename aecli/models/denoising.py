"""`denoising`: trained on corrupted inputs to predict the clean image (Vincent et al., 2008)."""

from __future__ import annotations

import torch

from aecli.models._blocks import pixel_loss
from aecli.models._registry import register
from aecli.models.plain import Autoencoder
from aecli.noise import corrupt


@register("denoising")
class DenoisingAutoencoder(Autoencoder):
    """Same network as `ae` (a unet by default); only the objective differs. forward() denoises."""

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        z, skips = self._encode(corrupt(x, self.config.noise, self.config.sigma))
        return pixel_loss(self.net.decode(z, skips), x, self.config.loss).mean()

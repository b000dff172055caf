"""`ae`: the plain autoencoder; reconstruct the input through a latent vector."""

from __future__ import annotations

import torch
from torch import nn

from aecli.config import ModelConfig
from aecli.models._blocks import make_backbone, pixel_loss
from aecli.models._registry import register


@register("ae")
class Autoencoder(nn.Module):
    """The base every variant shares: encode(), decode(), analyse(), forward(), training_loss()."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.net = make_backbone(config, self._latent_out())

    def _latent_out(self) -> int:
        return self.config.latent_dim

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The latent that reconstructions use, and the skip features (unet only)."""
        return self.net.encode(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """One latent vector per image: (B, C, H, W) -> (B, latent_dim)."""
        return self._encode(x)[0].float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] from latent vectors (conv arch only: a unet needs its skips)."""
        return torch.sigmoid(self.net.decode(z)).float()

    def analyse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and latent in one pass, for validation, calibration and scoring."""
        z, skips = self._encode(x)
        return torch.sigmoid(self.net.decode(z, skips)).float(), z.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of x, in [0, 1] (for a denoiser: the clean estimate)."""
        return self.analyse(x)[0]

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean per-pixel reconstruction loss of a clean batch."""
        z, skips = self._encode(x)
        return pixel_loss(self.net.decode(z, skips), x, self.config.loss).mean()

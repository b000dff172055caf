"""The model a file holds: a backbone trained by an objective, asked what it can do.

Commands never branch on a variant's name: they read `capabilities` and call the methods here,
which hand over to the objective (what is learnt) and the backbone (the network's shape).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aecli.config import ModelConfig
from aecli.errors import AecliError, UsageError
from aecli.models.backbones import make_backbone
from aecli.models.capabilities import capabilities_of, no_decoder
from aecli.models.objectives.base import Batch
from aecli.models.registry import objective_class


class Autoencoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.objective = objective_class(config.variant)(config)
        self.capabilities = capabilities_of(config)
        conditions = len(self.capabilities.classes)  # a conditional model's: its encoder and decoder see the class
        self.net = make_backbone(config, config.latent_dim * self.objective.latent_factor, conditions)
        self.heads = nn.ModuleDict(self.objective.networks())  # none but for objectives with networks of their own

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One training step's named loss terms; "loss" is the one to minimise."""
        return self.objective.loss(self, batch)

    def condition(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Each image's class as a one-hot row, for a conditional model (capabilities.classes);
        None for the others. `labels` are class numbers, indices into capabilities.classes."""
        classes = self.capabilities.classes
        if not classes:
            return None
        if labels is None:
            raise UsageError(
                f"this model is conditional on its classes ({', '.join(classes)}): it runs only where each "
                "image's class is given (ae encode --labels, ae sample --class); to score, denoise, decode or "
                "export, train a model without --condition"
            )
        return torch.nn.functional.one_hot(torch.as_tensor(labels).long(), len(classes)).float()  # where labels are

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        """One latent per image, float32: (B, latent_dim), or (B, C, h, w) without a bottleneck;
        with standard normal `noise` of that shape, a stochastic model's draw (a VAE's). `labels`:
        each image's class number, which a conditional model needs."""
        return self.objective.encode(self, x, noise, labels).float()

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Pixels in [0, 1] from latents alone (where capabilities.decode: not a unet's decoder)."""
        if not self.capabilities.decode:
            raise AecliError(f"this model cannot decode a latent alone: {no_decoder(self.config)}")
        return torch.sigmoid(self.net.decode(z, condition=self.condition(labels))).float()

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Each image's grid of code numbers (B, h, w), for a model with a codebook (capabilities.codebook)."""
        return self.objective.codes(self, x)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] from grids of code numbers (B, h, w)."""
        return self.decode(self.objective.from_codes(self, codes))

    def draw(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        """n latents from the prior learnt in training (where the objective has one: `ae sample --sampler prior`)."""
        return self.objective.draw(self, n, generator, temperature)

    def analyse(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and latent in one pass, for validation, calibration and scoring."""
        z, skips = self.objective.latent(self, x, labels)
        out = self.net.decode(z, skips, tuple(x.shape[-2:]), condition=self.condition(labels))
        return self.objective.pixels(x, out).float(), z.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of x, in [0, 1] (for a denoiser: the clean estimate)."""
        return self.analyse(x)[0]

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """What training shows the model of a clean batch (a denoiser's corrupted copy)."""
        return self.objective.corrupt(x)

    def scores(self, x: torch.Tensor, recon: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The objective's own anomaly metrics for a batch (a VAE's elbo), one value per image;
        `recon`, the reconstruction where the caller has it already (analyse's)."""
        return self.objective.scores(self, x, recon)

    def anomaly_map(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor | None:
        """The objective's own per-pixel anomaly, (B, H, W) in [0, 1]; None where maps show the error."""
        return self.objective.anomaly_map(self, x, recon)

    def prior(self, latent_stats: dict[str, Any] | None):
        """What `ae sample` draws latents from: mean, a covariance factor, and where they came from."""
        size = 1
        for n in self.capabilities.latent_shape:
            size *= n
        return self.objective.prior(latent_stats, size)


def create_model(config: ModelConfig) -> Autoencoder:
    """Build the model a resolved config describes (channels, size and widths filled in)."""
    return Autoencoder(config)

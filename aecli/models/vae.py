"""`vae`: a variational autoencoder (Kingma & Welling, 2014) with a beta-weighted KL term."""

from __future__ import annotations

import torch

from aecli.models._blocks import pixel_loss
from aecli.models._registry import register
from aecli.models.plain import Autoencoder


@register("vae")
class VariationalAutoencoder(Autoencoder):
    """The encoder gives mean and log-variance; encode(), analyse() and forward() use the mean."""

    def _latent_out(self) -> int:
        return 2 * self.config.latent_dim

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Mean and log-variance of q(z|x), and the skip features (unet only)."""
        h, skips = self.net.encode(x)
        mu, logvar = h.float().chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20), skips

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        mu, _, skips = self.posterior(x)
        return mu, skips

    def _negative_elbo(self, x: torch.Tensor, sample: bool) -> torch.Tensor:
        """Per image: summed pixel loss + beta * KL(q(z|x) || N(0, I)); z drawn, or the mean."""
        mu, logvar, skips = self.posterior(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu  # reparameterisation
        recon = pixel_loss(self.net.decode(z, skips), x, self.config.loss).flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return recon + self.config.beta * kl

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        return self._negative_elbo(x, sample=True).mean()

    def negative_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """The anomaly score `elbo`: deterministic, with z at the posterior mean."""
        return self._negative_elbo(x, sample=False)

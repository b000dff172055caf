"""`vae`: a variational autoencoder (Kingma & Welling, 2014) with a beta-weighted KL term."""

from __future__ import annotations

from aecli.models.objectives.base import Objective
from aecli.models.registry import register
from aecli.settings import Setting


@register
class VAE(Objective):
    name = "vae"
    summary = "a probabilistic latent with a KL term: samples new images, scores by ELBO"
    settings = (Setting("beta", 1.0, "Weight of the KL term (beta-VAE); 1 is the true ELBO.", low=0),)
    latent_factor = 2
    metrics = ("elbo",)
    generative = True

    def posterior(self, model, x):
        """Mean and log-variance of q(z|x), and the skip features (a unet's)."""
        h, skips = model.net.encode(x)
        mu, logvar = h.float().chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20), skips

    def latent(self, model, x):
        mu, _, skips = self.posterior(model, x)
        return mu, skips

    def encode(self, model, x, noise=None):
        """The posterior mean; with standard normal `noise`, a draw from q(z|x)."""
        import torch

        mu, logvar, _ = self.posterior(model, x)
        if noise is None:
            return mu
        return mu + noise.to(mu.device) * torch.exp(0.5 * logvar)

    def terms(self, model, x, sample: bool):
        """Per image: the summed pixel loss and the KL(q(z|x) || N(0, I)); z drawn, or the mean."""
        import torch

        from aecli.models.backbones import pixel_loss

        mu, logvar, skips = self.posterior(model, x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu  # reparameterisation
        recon = pixel_loss(model.net.decode(z, skips), x, self.config.loss).flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)
        return recon, kl

    def loss(self, model, batch):
        recon, kl = self.terms(model, batch["images"], sample=True)
        return {
            "loss": (recon + self.config.beta * kl).mean(),
            "reconstruction": recon.detach().mean(),
            "kl": kl.detach().mean(),
        }

    def scores(self, model, x):
        """`elbo`: the negative ELBO with z at the posterior mean (deterministic)."""
        recon, kl = self.terms(model, x, sample=False)
        return {"elbo": recon + self.config.beta * kl}

    def prior(self, latent_stats, size):
        import numpy as np

        return np.zeros(size), np.eye(size), "the VAE's prior N(0, I)"

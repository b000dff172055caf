"""`vae`: a variational autoencoder (Kingma & Welling, 2014) with a beta-weighted KL term."""

from __future__ import annotations

from aecli.models.objectives.base import Objective
from aecli.models.registry import register
from aecli.settings import Names, Setting


@register
class VAE(Objective):
    name = "vae"
    summary = "a probabilistic latent with a KL term: samples new images, scores by ELBO"
    settings = (
        Setting("beta", 1.0, "Weight of the KL term (beta-VAE); 1 is the true ELBO.", low=0),
        # a conditional VAE (Sohn et al. 2015): encoder and decoder both see the image's class
        Setting("condition", None, "Condition on each image's class, read as `ae score --labels` reads labels: "
                "folders (the top folder's name), class (a dataset's labels) or FILE.csv (rows of path,class).",
                kind=str, unset="none: unconditional"),
        Setting("classes", None, "With --condition: the class names, in order, e.g. circle,square; stored in "
                "the model file.", kind=Names, unset="the names found, sorted"),
    )  # fmt: skip
    latent_factor = 2
    metrics = ("elbo",)
    generative = True

    @classmethod
    def classes_of(cls, config):
        return tuple(config.classes or ()) if config.condition else ()

    def posterior(self, model, x, labels=None):
        """Mean and log-variance of q(z|x) (q(z|x, class) for a conditional model), and the skip features (a unet's)."""
        h, skips = model.net.encode(x, model.condition(labels))
        mu, logvar = h.float().chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20), skips

    def latent(self, model, x, labels=None):
        mu, _, skips = self.posterior(model, x, labels)
        return mu, skips

    def encode(self, model, x, noise=None, labels=None):
        """The posterior mean; with standard normal `noise`, a draw from q(z|x)."""
        import torch

        mu, logvar, _ = self.posterior(model, x, labels)
        if noise is None:
            return mu
        return mu + noise.to(mu.device) * torch.exp(0.5 * logvar)

    def terms(self, model, x, sample: bool, labels=None):
        """Per image: the summed pixel loss and the KL(q(z|x) || N(0, I)); z drawn, or the mean."""
        import torch

        from aecli.models.backbones import pixel_loss

        mu, logvar, skips = self.posterior(model, x, labels)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu  # reparameterisation
        logits = model.net.decode(z, skips, condition=model.condition(labels))
        recon = pixel_loss(logits, x, self.config.loss).flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)
        return recon, kl

    def loss(self, model, batch):
        recon, kl = self.terms(model, batch["images"], sample=True, labels=batch.get("labels"))
        return {
            "loss": (recon + self.config.beta * kl).mean(),
            "reconstruction": recon.detach().mean(),
            "kl": kl.detach().mean(),
        }

    def scores(self, model, x, recon=None):
        """`elbo`: the negative ELBO with z at the posterior mean (deterministic)."""
        recon, kl = self.terms(model, x, sample=False)
        return {"elbo": recon + self.config.beta * kl}

    def prior(self, latent_stats, size):
        import numpy as np

        return np.zeros(size), np.eye(size), "the VAE's prior N(0, I)"

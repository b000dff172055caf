"""`ae`: the plain autoencoder; reconstruct the input through its latent."""

from __future__ import annotations

from aecli.models.objectives.base import Objective
from aecli.models.registry import register


@register
class Reconstruct(Objective):
    name = "ae"
    summary = "reconstruct the input: latents for search and clustering, and anomaly scores"

    def loss(self, model, batch):
        """Mean per-pixel loss between the image and the reconstruction of what the model saw."""
        from aecli.models.backbones import pixel_loss

        x = batch["images"]
        z, skips = self.latent(model, self.corrupt(x))
        return {"loss": pixel_loss(model.net.decode(z, skips), x, self.config.loss).mean()}

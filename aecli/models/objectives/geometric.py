"""`geometric`: reconstruct, and tell which rotation or flip an image was shown in (GEOM's idea).

Golan & El-Yaniv (NeurIPS 2018) found that a classifier taught to tell which geometric transform
was applied to the normal images tells anomalies too: on an odd image it is unsure which way is
up. Here a small head on the latent learns the eight rotations and flips of the square beside the
autoencoder's pixel loss, and `transforms` scores an image by the head's negative log-likelihood
of each transform it is shown in, summed over the eight. `geometric`, the default metric, adds
it to `combined`'s two (mse, latent), each standardised by its calibration (scores.py).
"""

from __future__ import annotations

from aecli.models.objectives.base import Objective
from aecli.models.registry import register
from aecli.models.symmetries import SYMMETRIES as TRANSFORMS
from aecli.models.symmetries import transformed
from aecli.settings import Setting

HEAD_WIDTH = 128  # hidden units of the head on the latent: small beside the backbone


@register
class Geometric(Objective):
    name = "geometric"
    summary = "reconstruct, and tell rotations and flips apart: one-class anomaly scores (odd images)"
    settings = (
        Setting("transform_weight", 1.0, "Weight of the rotation-and-flip classifier's loss beside the pixel "
                "loss; 0 trains a plain autoencoder.", low=0),
    )  # fmt: skip
    # the loss is mean squared error's: bce ranks grey images by their greyness (scores.BCE_GREYNESS)
    metrics = ("transforms", "geometric")
    default_metric = "geometric"

    def networks(self):
        from torch import nn

        head = nn.Sequential(
            nn.Linear(self.config.latent_dim, HEAD_WIDTH), nn.ReLU(inplace=True), nn.Linear(HEAD_WIDTH, TRANSFORMS)
        )
        return {"transforms": head}

    def logits(self, model, x):
        """The head's logits over the eight transforms for images as they are (each may be transformed)."""
        z = model.net.encode(x)[0]
        return model.heads["transforms"](z.flatten(2).mean(2) if z.dim() > 2 else z)

    def loss(self, model, batch):
        """The pixel loss of the images as they are, and the head's cross-entropy on a random transform of each."""
        import torch
        import torch.nn.functional as F

        from aecli.models.backbones import pixel_loss

        x = batch["images"]
        z, skips = self.latent(model, x)
        pixels = pixel_loss(model.net.decode(z, skips), x, self.config.loss).mean()
        which = torch.randint(TRANSFORMS, (len(x),), device=x.device)
        guessed = F.cross_entropy(self.logits(model, transformed(x, which)).float(), which)
        return {"loss": pixels + self.config.transform_weight * guessed, "pixels": pixels.detach(), "transforms": guessed.detach()}

    def scores(self, model, x, recon=None):
        """`transforms`: -log p(t | t(x)) summed over the eight transforms t (deterministic)."""
        import torch.nn.functional as F

        # summed term by term, with no tensor sized by len(x): ae export keeps the batch size free
        logits = (self.logits(model, transformed(x, t)).float() for t in range(TRANSFORMS))
        total = sum(-F.log_softmax(guess, 1)[:, t] for t, guess in enumerate(logits))
        return {"transforms": total}

"""`vqvae`: a discrete code (van den Oord et al., 2017), and a small prior over it to sample from.

Each cell of the spatial latent is replaced by the nearest of `codebook_size` vectors, so an
image becomes a small grid of whole numbers: a compressed code for storage and for downstream
models. Gradients pass the quantisation straight through to the encoder; the codebook follows
the encoder's outputs by moving averages and revives unused codes (models/codebook.py).

Beside it a small causal transformer learns p(code grid) from each batch's codes
(models/code_prior.py). `ae sample` draws from it (the `prior` sampler), and its negative
log-likelihood per cell is the `rarity` anomaly metric: how unlike the training codes a code is.
"""

from __future__ import annotations

import math

from aecli.errors import UsageError
from aecli.models.objectives.base import Objective
from aecli.models.registry import register
from aecli.settings import Setting

DEAD_FRACTION = 0.03  # a code chosen this much less often than the average one is revived, or counted unused


@register
class VQVAE(Objective):
    name = "vqvae"
    summary = "a discrete code: a grid of codebook entries per image, with a learnt prior to sample from"
    settings = (
        Setting("codebook_size", 256, "Entries in the codebook: the values each latent cell can take.", low=2),
        # the paper's beta; the moving averages replace its codebook loss
        Setting("commitment", 0.25, "Weight of the loss that keeps the encoder's outputs near their codes.", low=0),
    )  # fmt: skip
    defaults = {"bottleneck": False, "upsample": "resize"}  # a grid of codes; samples without checkerboard marks
    metrics = ("rarity",)
    learnt_prior = True

    def __init__(self, config):
        super().__init__(config)
        if config.bottleneck:
            raise UsageError("--variant vqvae quantises a spatial latent: train it with --no-bottleneck, its default")

    @classmethod
    def codebook_of(cls, config) -> int:
        return config.codebook_size

    def networks(self):
        from aecli.models.capabilities import latent_grid
        from aecli.models.code_prior import CodePrior
        from aecli.models.codebook import Codebook

        return {
            "codebook": Codebook(self.config.codebook_size, self.config.latent_dim, DEAD_FRACTION),
            "prior": CodePrior(self.config.codebook_size, latent_grid(self.config) ** 2),
        }

    def quantised(self, model, x):
        """The encoder's output (float32), its codes (B, h, w), their vectors, and the skip features."""
        z, skips = model.net.encode(x)
        z = z.float()
        codes = model.heads["codebook"].nearest(z)
        return z, codes, model.heads["codebook"].vectors_of(codes), skips

    def latent(self, model, x, labels=None):
        _, _, vectors, skips = self.quantised(model, x)
        return vectors, skips

    def codes(self, model, x):
        """Each image's grid of code numbers, (B, h, w)."""
        return self.quantised(model, x)[1]

    def from_codes(self, model, codes):
        """The latent a grid of code numbers (B, h, w) stands for."""
        return model.heads["codebook"].vectors_of(codes)

    def loss(self, model, batch):
        """Pixel loss through the straight-through code, the commitment, and the prior's cross-entropy."""
        import torch.nn.functional as F

        from aecli.models.backbones import pixel_loss
        from aecli.models.codebook import perplexity

        x = batch["images"]
        z, codes, vectors, skips = self.quantised(model, x)
        if model.training:
            model.heads["codebook"].follow(z.detach(), codes)
        commitment = F.mse_loss(z, vectors.detach())
        out = model.net.decode(z + (vectors - z).detach(), skips)  # straight through to the encoder
        pixels = pixel_loss(out, x, self.config.loss).mean()
        prior = model.heads["prior"].nll(codes.flatten(1)).mean()
        return {
            "loss": pixels + self.config.commitment * commitment + prior,
            "reconstruction": pixels.detach(),
            "commitment": commitment.detach(),
            "prior": prior.detach(),
            "perplexity": perplexity(codes, self.config.codebook_size),
        }

    def scores(self, model, x, recon=None):
        """`rarity`: the prior's negative log-likelihood of the image's code, nats per cell."""
        codes = self.codes(model, x).flatten(1)
        prior = model.heads["prior"]
        if codes.shape[1] != prior.cells:
            raise UsageError(
                f"rarity needs codes of the model's size ({prior.cells} cells); these have {codes.shape[1]}"
            )
        return {"rarity": prior.nll(codes).mean(1)}

    def draw(self, model, n, generator, temperature):
        """Latents of n code grids drawn from the prior: new images once decoded."""
        from aecli.models.capabilities import latent_grid

        side = latent_grid(self.config)
        grids = model.heads["prior"].draw(n, generator, temperature).view(n, side, side)
        return self.from_codes(model, grids)

    @classmethod
    def report(cls, config, read):
        """Codebook use, from the moving counts the file stores: `ae info`'s codebook line."""
        counts = read("heads.codebook.counts")
        total = sum(counts)
        if not total:
            return {}
        entropy = -sum(c / total * math.log(c / total) for c in counts if c > 0)
        rare = DEAD_FRACTION * total / len(counts)
        return {
            "codebook": {
                "size": len(counts),
                "used": sum(c > rare for c in counts),
                "perplexity": round(math.exp(entropy), 1),
            }
        }

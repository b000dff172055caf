"""The objective contract: what a model learns, how one batch trains it, and what it can then do.

A model is a backbone (models/backbones.py: the network's shape) trained by an objective. An
objective is a plain class in a file of its own here, registered by name with `@register`:

  settings       its own settings (aecli.settings.Setting), shown under its name in `ae train --help`
  defaults       the shared settings it starts from otherwise (arch, epochs, batch_size, lr)
  resolved()     its settings whose default depends on the shared ones (a denoiser's residual, on its arch)
  loss()         one training step's named loss terms from a batch (a mapping: images, and
                 labels, masks or paths where the data has them); "loss" is the one minimised
  capabilities   what commands may ask of it: sampling, denoising, extra anomaly metrics
  networks()     any network of its own beside the backbone (a segmentation head), trained and stored with it

Its methods get the model (models/model.py) and tensors. Objective files import torch inside
their methods only, so reading their settings for `--help` costs no torch import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from aecli.errors import AecliError
from aecli.settings import Setting

if TYPE_CHECKING:
    import numpy as np
    import torch

    from aecli.config import ModelConfig
    from aecli.models.model import Autoencoder

Batch = Mapping[str, Any]  # "images": (B, C, H, W) in [0, 1]; optional "labels" (class numbers), "masks", "paths"


class Objective:
    name: ClassVar[str]
    summary: ClassVar[str]  # one line: what it is for, shown in `ae train --help`
    settings: ClassVar[tuple[Setting, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}
    latent_factor: ClassVar[int] = 1  # encoder outputs per latent number (a VAE's mean and log-variance: 2)
    denoises: ClassVar[bool] = False  # trained to give clean images back from corrupted ones
    metrics: ClassVar[tuple[str, ...]] = ()  # anomaly metrics of its own, beyond the reconstruction ones
    generative: ClassVar[bool] = False  # its latent has a prior of its own, N(0, I) (a VAE's)
    learnt_prior: ClassVar[bool] = False  # draws latents from a prior learnt in training (`draw`): --sampler prior
    default_metric: ClassVar[str | None] = None  # the metric `ae score` uses unless told; None: scores.py's

    def __init__(self, config: ModelConfig):
        self.config = config

    def loss(self, model: Autoencoder, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def latent(
        self, model: Autoencoder, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The latent reconstructions use, and the backbone's skip features (a unet's); `labels`,
        each image's class number, for a conditional model (see classes_of)."""
        return model.net.encode(x, model.condition(labels))

    def encode(
        self, model: Autoencoder, x: torch.Tensor, noise: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One latent per image. `noise` (standard normal, one latent's shape per image) lets a
        stochastic objective draw from its posterior; the others give their latent as it is."""
        return self.latent(model, x, labels)[0]

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """What the model sees of a clean batch in training: the batch itself, but for denoisers."""
        return x

    def pixels(self, seen: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] from the backbone's output for the images it saw: the sigmoid of its logits."""
        import torch

        return torch.sigmoid(out)

    @classmethod
    def classes_of(cls, config: ModelConfig) -> tuple[str, ...]:
        """The classes a conditional model is conditioned on, in label order; () for the others."""
        return ()

    @classmethod
    def resolved(cls, config: ModelConfig) -> ModelConfig:
        """Its settings whose default depends on the shared ones, filled in once those are."""
        return config

    @classmethod
    def needs_input(cls, config: ModelConfig) -> bool:
        """Its pixels are built from the input as well as the latent (a residual denoiser's), so a
        latent alone decodes to nothing."""
        return False

    def scores(self, model: Autoencoder, x: torch.Tensor, recon: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Its own anomaly metrics (named in `metrics`), one value per image; `recon`, the pixels
        model.analyse gives, where the caller has them already."""
        return {}

    @classmethod
    def codebook_of(cls, config: ModelConfig) -> int:
        """How many codes each latent cell chooses from (a VQ-VAE's); 0 for a continuous latent."""
        return 0

    def codes(self, model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
        """Each image's grid of code numbers (B, h, w), where codebook_of is not 0."""
        raise NotImplementedError

    def from_codes(self, model: Autoencoder, codes: torch.Tensor) -> torch.Tensor:
        """The latent that a grid of code numbers (B, h, w) stands for."""
        raise NotImplementedError

    def draw(self, model: Autoencoder, n: int, generator: torch.Generator, temperature: float) -> torch.Tensor:
        """n latents from the prior learnt in training, where learnt_prior."""
        raise NotImplementedError

    @classmethod
    def report(cls, config: ModelConfig, read: Callable[[str], list[float]]) -> dict[str, Any]:
        """What `ae info` shows beside the rest, from the stored weights (`read` gives a tensor's
        numbers by name, torch-free)."""
        return {}

    def networks(self) -> dict[str, torch.nn.Module]:
        """Networks of its own beside the backbone, by name: trained with it and stored in its file."""
        return {}

    def anomaly_map(self, model: Autoencoder, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor | None:
        """Where each image is anomalous, (B, H, W) in [0, 1], for an objective that predicts it (a
        segmentation); None: maps show how far the reconstruction is from the input."""
        return None

    def prior(self, latent_stats: dict[str, Any] | None, size: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Mean, a factor L with L Lᵀ = covariance, and their source, for latents of `size` numbers:
        what `ae sample` draws from.

        Without a prior of its own, the Gaussian fitted to the training latents after training.
        """
        import numpy as np

        if not latent_stats:
            raise AecliError("no latent statistics to sample from: its training did not finish (see --resume)")
        mean, cov = np.asarray(latent_stats["mean"]), np.asarray(latent_stats["cov"])
        values, vectors = np.linalg.eigh((cov + cov.T) / 2)
        factor = vectors * np.sqrt(np.clip(values, 0, None))
        n, split = latent_stats["n"], latent_stats["split"]
        return mean, factor, f"a Gaussian fitted to {n} {split} latents (not a generative model)"

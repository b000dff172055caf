"""What a model can do, worked out from its config alone.

No torch here: `ae info` reports a file's capabilities from its header in a blink, and the
Autoencoder that a command loads carries the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from aecli.config import ModelConfig
from aecli.models.registry import objective_class

RECONSTRUCTION_METRICS = ("mse", "mae", "bce", "ssim")  # every model has them: see scoring/scores.py
LATENT_METRICS = ("latent", "combined")  # need the latent statistics a finished training stores
SKIP_ARCHS = ("unet",)  # backbones whose decoder needs the encoder's skip connections


@dataclass(frozen=True)
class Capabilities:
    """What a model can do; commands ask this instead of the variant's name."""

    decode: bool  # turn a latent alone into an image (ae decode, sample, interpolate)
    sample: bool  # draw new images (ae sample)
    denoise: bool  # trained to give clean images back from corrupted ones
    any_size: bool  # runs on images of any size as they are (fully convolutional)
    metrics: tuple[str, ...]  # the anomaly metrics ae score can compute with it
    latent_shape: tuple[int, ...]  # one image's latent at the model's size
    skips: bool  # detail bypasses the latent (a unet): anomalies reconstruct well too
    classes: tuple[str, ...] = ()  # a conditional model's classes: encoding and sampling need one per image
    default_metric: str | None = None  # the metric `ae score` uses unless told, where the objective has one
    codebook: int = 0  # codes each latent cell chooses from (a VQ-VAE's: encode writes code numbers); 0: continuous


def latent_grid(config: ModelConfig) -> int:
    """The side of the smallest feature map at the model's size: the image, padded to a multiple
    of 2**stages, over 2**stages."""
    step = 2 ** len(config.widths)
    return -(-config.image_size // step)


def no_decoder(config: ModelConfig) -> str:
    """Why a model cannot decode a latent alone, and the `ae train` flags that make one that can."""
    why, flags = [], []
    if config.arch in SKIP_ARCHS:
        why.append(f"its {config.arch} decoder needs the encoder's skip connections")
        flags.append("--arch conv")
    if objective_class(config.variant).needs_input(config):
        why.append("it gives back its input less the noise it predicts")
        flags.append("--no-residual")
    return f"{' and '.join(why)}; decoding and sampling latents need a model trained with {' '.join(flags)}"


def capabilities_of(config: ModelConfig) -> Capabilities:
    objective = objective_class(config.variant)
    alone = config.arch not in SKIP_ARCHS and not objective.needs_input(config)
    grid = latent_grid(config)
    return Capabilities(
        decode=alone,
        sample=alone,
        denoise=objective.denoises,
        any_size=not config.bottleneck,
        metrics=RECONSTRUCTION_METRICS + LATENT_METRICS + objective.metrics,
        latent_shape=(config.latent_dim,) if config.bottleneck else (config.latent_dim, grid, grid),
        skips=not alone,
        classes=objective.classes_of(config),
        default_metric=objective.default_metric,
        codebook=objective.codebook_of(config),
    )

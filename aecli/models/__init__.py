"""Models: a backbone (the network's shape) trained by an objective (what it learns and can do).

    registry.py      objectives by name, found in objectives/ (one file each)
    objectives/      reconstruct (ae), denoise (denoising), vae, ...: settings, training step, capabilities
    backbones.py     conv and unet, with a linear bottleneck or fully convolutional
    model.py         Autoencoder: the nn.Module a model file holds, asked what it can do

This package and the registry import no torch; `create_model` loads it on first use.
"""

from aecli.models.registry import list_variants, objective_class, register

__all__ = ["create_model", "list_variants", "objective_class", "register"]


def __getattr__(name: str):
    if name == "create_model":  # torch loads here, not when the CLI reads settings for --help
        from aecli.models.model import create_model

        return create_model
    raise AttributeError(name)

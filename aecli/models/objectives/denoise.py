"""`denoising`: trained on corrupted inputs to predict the clean image (Vincent et al., 2008)."""

from __future__ import annotations

from aecli.models.objectives.reconstruct import Reconstruct
from aecli.models.registry import register
from aecli.settings import Setting

KINDS = ("gaussian", "salt-pepper", "mask")


@register
class Denoise(Reconstruct):
    name = "denoising"
    summary = "give back the clean image from a corrupted one"
    settings = (
        Setting("sigma", 0.2, "Noise strength: the gaussian's std, or the fraction of pixels hit.", low=0, high=1),
        Setting("noise", "gaussian", "Corruption: gaussian, salt-pepper, mask, or mixed (one kind per batch).",
                choices=(*KINDS, "mixed")),
    )  # fmt: skip
    # skip connections carry the detail a denoiser must keep; it learns local detail, which wants
    # more and smaller steps than the seed recipe
    defaults = {"arch": "unet", "epochs": 20, "batch_size": 32, "lr": 2e-3}
    denoises = True

    def corrupt(self, x):
        return corrupt(x, self.config.noise, self.config.sigma)


def corrupt(x, kind: str, amount: float):
    """A corrupted copy of pixels in [0, 1]; `amount` is the std or the fraction hit.

    `mixed` picks one kind per call, so a denoiser trained on it sees all of them.
    """
    import torch

    if kind == "mixed":
        kind = KINDS[int(torch.randint(len(KINDS), ()))]
    if kind == "gaussian":
        return (x + amount * torch.randn_like(x)).clamp(0, 1)
    hit = torch.rand_like(x) < amount
    if kind == "salt-pepper":
        return torch.where(hit, (torch.rand_like(x) < 0.5).to(x.dtype), x)
    if kind == "mask":
        return x.masked_fill(hit, 0.0)
    raise ValueError(f"unknown noise kind {kind!r}")

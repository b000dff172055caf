"""Corruptions for denoising: used to train the denoising variant and by `--add-noise` later."""

from __future__ import annotations

import torch

KINDS = ("gaussian", "salt-pepper", "mask")


def corrupt(x: torch.Tensor, kind: str, amount: float) -> torch.Tensor:
    """Return a corrupted copy of pixels in [0, 1]; `amount` is the std or the fraction hit.

    `mixed` picks one kind per call, so a denoiser trained on it sees all of them.
    """
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

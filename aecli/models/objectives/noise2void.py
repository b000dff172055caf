"""`noise2void`: learn to denoise from noisy images alone, by blind-spot training.

Noise2Void (Krull et al., 2019): hide a few pixels of each noisy image, and train the model to
predict them from their neighbourhood, the loss taken at those pixels only, against the noisy
image itself. Noise independent from pixel to pixel cannot be predicted from the neighbours, so
the best prediction is the clean value: no clean image is ever needed. N2V2 (Höck et al., 2022)
hides a pixel behind a summary of its neighbours (their median; here their mean) rather than one
neighbour's value, which removes the checkerboard artefacts a copied neighbour teaches; it is the
default here. The loss is L1 by default: the median of noise clipped to [0, 1] is still the clean
value, where the mean of it lifts black backgrounds.

The data is noisy already: training adds no noise (`corrupt` is the identity), and `ae denoise`
runs the noisy images through the model as they are.
"""

from __future__ import annotations

from aecli.models.objectives.base import Objective
from aecli.models.registry import register
from aecli.settings import Setting

NEIGHBOURHOOD = 2  # hidden pixels take a value from the 5x5 window around them, the centre left out


@register
class Noise2Void(Objective):
    name = "noise2void"
    summary = "learn to denoise from noisy images alone, no clean ones (Noise2Void, N2V2)"
    settings = (
        Setting("mask_fraction", 0.1, "Fraction of each image's pixels hidden per step: one at a random spot "
                "in each cell of a grid (stratified).", low=0, high=0.25, low_open=True),
        Setting("hide_with", "mean", "What a hidden pixel shows: mean (N2V2: its neighbours' mean) or neighbour "
                "(N2V: one random neighbour's value).", choices=("mean", "neighbour")),
        Setting("target_loss", "l1", "Loss at the hidden pixels: l1 (the median: unbiased where the noise was "
                "clipped to [0, 1], as it is in 8-bit images) or mse (the mean).", choices=("l1", "mse")),
    )  # fmt: skip
    # skip connections keep the detail a denoiser must keep, as for `denoising`; only a tenth of the
    # pixels carry a loss, so it wants more steps than a supervised denoiser: smaller batches, more
    # epochs, and a larger step (a tenth hidden at 5e-3 was the best of a few short runs on
    # Fashion-MNIST: docs/benchmarks.md)
    defaults = {"arch": "unet", "epochs": 30, "batch_size": 16, "lr": 5e-3}
    denoises = True

    def loss(self, model, batch):
        """Hide pixels, predict them from the rest; the loss at the hidden pixels only."""
        x = batch["images"]
        hidden = blind_spots(x, self.config.mask_fraction)
        z, skips = self.latent(model, mask(x, hidden, self.config.hide_with))
        logits = model.net.decode(z, skips, tuple(x.shape[-2:]))
        return {"loss": masked_loss(logits, x, hidden, self.config.target_loss)}


def blind_spots(x, fraction: float):
    """A (B, 1, H, W) boolean mask: one pixel at a random spot in each cell of a grid whose cells
    hold about 1/fraction pixels (stratified, so the hidden pixels spread over the whole image)."""
    import torch

    b, _, h, w = x.shape
    side = max(1, round(fraction**-0.5))
    rows, cols = -(-h // side), -(-w // side)
    spot = torch.randint(side * side, (b, rows, cols, 1), device=x.device)
    cells = torch.zeros(b, rows, cols, side * side, dtype=torch.bool, device=x.device).scatter_(3, spot, True)
    grid = cells.view(b, rows, cols, side, side).permute(0, 1, 3, 2, 4).reshape(b, 1, rows * side, cols * side)
    return grid[..., :h, :w]


def mask(x, hidden, replace: str):
    """x with each hidden pixel's value (every channel) replaced from its neighbourhood.

    Only pixels that are not hidden themselves give values: a hidden pixel's own noise must never
    show anywhere in the input, or the model could learn to copy it from a neighbour's spot.
    """
    import torch
    import torch.nn.functional as F

    k, b, c, h, w = 2 * NEIGHBOURHOOD + 1, *x.shape
    mode = "reflect" if min(h, w) > NEIGHBOURHOOD else "replicate"
    shown = (~hidden).to(x.dtype)
    source, weight = (F.pad(t, (NEIGHBOURHOOD,) * 4, mode=mode) for t in (x * shown, shown))
    value = F.avg_pool2d(source, k, stride=1) / F.avg_pool2d(weight, k, stride=1).clamp_min(1 / (k * k))
    if replace == "neighbour":
        pick = torch.randint(k * k - 1, (b, 1, h, w), device=x.device)
        pick = pick + (pick >= k * k // 2)  # skip the centre
        yy = torch.arange(h, device=x.device).view(1, 1, h, 1) + pick // k
        xx = torch.arange(w, device=x.device).view(1, 1, 1, w) + pick % k
        index = (yy * source.shape[-1] + xx).flatten(2)
        picked = source.flatten(2).gather(2, index.expand(b, c, -1)).view(b, c, h, w)
        usable = weight.flatten(2).gather(2, index).view(b, 1, h, w) > 0
        value = torch.where(usable, picked, value)  # a hidden neighbour: the mean of the shown ones
    return torch.where(hidden, value, x)


def masked_loss(logits, target, hidden, kind: str):
    """The mean loss per hidden pixel (every channel) of sigmoid(logits) against the noisy target."""
    import torch

    error = torch.sigmoid(logits.float()) - target.float()
    error = error.abs() if kind == "l1" else error.square()
    weight = hidden.expand_as(error).float()
    return (error * weight).sum() / weight.sum().clamp_min(1)

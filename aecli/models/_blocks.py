"""Convolutional encoder/decoder backbones shared by every variant.

Both generalise the seed template (stride-2 stages down to about 4x4, a linear bottleneck, sigmoid
pixels) to any square size and 1 or 3 channels. Inputs whose size is not a multiple of 2**stages
are padded by edge replication and the output is cropped back, so 28x28 works like 32x32.

`conv` is the seed: everything passes through the latent vector, which is what makes latents
meaningful for sampling and decoding, and also what blurs detail. `unet` adds skip connections
from each encoder stage to the decoder: detail bypasses the bottleneck, which is what a denoiser
needs, but its decoder cannot run from a latent vector alone, and as a plain autoencoder it
reconstructs almost anything, anomalies included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aecli.config import ModelConfig
from aecli.errors import AecliError


class _Padding:
    """Pad to a multiple of 2**stages and crop back; the identity when the size already fits."""

    def __init__(self, size: int, stages: int):
        step = 2**stages
        self.padded = -(-size // step) * step
        self.before = (self.padded - size) // 2
        self.after = self.padded - size - self.before
        self.size = size

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        if self.padded == self.size:
            return x
        b, a = self.before, self.after
        return F.pad(x, (b, a, b, a), mode="replicate")

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        if self.padded == self.size:
            return x
        return x[..., self.before : self.before + self.size, self.before : self.before + self.size]


class _Backbone(nn.Module):
    """What both backbones share: the padding, and the way back from the latent to a 4x4 map."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.widths = config.widths
        self.padding = _Padding(config.image_size, len(config.widths))
        self.bottom = self.padding.padded // 2 ** len(config.widths)
        self.flat = config.widths[-1] * self.bottom**2
        self.expand = nn.Sequential(nn.Linear(config.latent_dim, self.flat), nn.ReLU(inplace=True))

    def unflatten(self, z: torch.Tensor) -> torch.Tensor:
        return self.expand(z).view(-1, self.widths[-1], self.bottom, self.bottom)


class ConvBackbone(_Backbone):
    """The seed template: strided convs, a linear bottleneck, transposed convs back."""

    def __init__(self, config: ModelConfig, latent_out: int):
        super().__init__(config)
        widths, channels = config.widths, config.channels
        layers, prev = [], channels
        for w in widths:
            layers += [nn.Conv2d(prev, w, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            prev = w
        self.encoder = nn.Sequential(*layers, nn.Flatten(), nn.Linear(self.flat, latent_out))
        layers = []
        for w_in, w_out in zip(widths[::-1], [*widths[-2::-1], channels]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
        self.decoder = nn.Sequential(*layers[:-1])  # the last stage gives logits: no ReLU

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.encoder(self.padding.pad(x)), []

    def decode(self, z: torch.Tensor, skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        return self.padding.crop(self.decoder(self.unflatten(z)))


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with batch norm: it lets a denoiser train in minutes, not hours."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNetBackbone(_Backbone):
    """An encoder-decoder with skip connections at every scale and the same linear bottleneck."""

    def __init__(self, config: ModelConfig, latent_out: int):
        super().__init__(config)
        widths, channels = config.widths, config.channels
        self.stem = _block(channels, widths[0])
        self.downs = nn.ModuleList()
        for w_in, w_out in zip(widths, [*widths[1:], widths[-1]]):
            self.downs.append(
                nn.Sequential(nn.Conv2d(w_in, w_out, 3, stride=2, padding=1), nn.ReLU(inplace=True))
            )
        # the stages below the stem refine what each downsampling produced
        self.refine = nn.ModuleList(_block(w, w) for w in widths[1:])
        self.to_latent = nn.Sequential(nn.Flatten(), nn.Linear(self.flat, latent_out))
        self.ups, self.merges = nn.ModuleList(), nn.ModuleList()
        for w_in, w_out in zip([widths[-1], *widths[:0:-1]], widths[::-1]):
            self.ups.append(nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1))
            self.merges.append(_block(2 * w_out, w_out))
        self.head = nn.Conv2d(widths[0], channels, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.stem(self.padding.pad(x))
        skips = [h]
        for i, down in enumerate(self.downs):
            h = down(h)
            if i < len(self.refine):
                h = self.refine[i](h)
                skips.append(h)
        return self.to_latent(h), skips

    def decode(self, z: torch.Tensor, skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        if not skips:
            raise AecliError(
                "this model (arch unet) decodes only with its encoder's skip connections; "
                "decoding latents alone needs a model trained with --arch conv"
            )
        h = self.unflatten(z)
        for up, merge, skip in zip(self.ups, self.merges, reversed(skips)):
            h = merge(torch.cat([up(h), skip], dim=1))
        return self.padding.crop(self.head(h))


def make_backbone(config: ModelConfig, latent_out: int) -> nn.Module:
    return {"conv": ConvBackbone, "unet": UNetBackbone}[config.arch](config, latent_out)


def pixel_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-pixel loss, unreduced; logits in float32 so bf16 autocast never hurts the loss."""
    logits = logits.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return F.mse_loss(torch.sigmoid(logits), target, reduction="none")

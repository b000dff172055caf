"""Convolutional encoder/decoder backbones: the network's shape, whatever the objective.

Both generalise the seed template (stride-2 stages down to about 4x4, sigmoid pixels) to any
square size and 1 or 3 channels. Inputs whose sides are not a multiple of 2**stages are padded
by edge replication and the output is cropped back, so 28x28 works like 32x32.

`conv` is the seed: everything passes through the latent, which is what makes latents meaningful
for sampling and decoding, and also what blurs detail. `unet` adds skip connections from each
encoder stage to the decoder: detail bypasses the bottleneck, which is what a denoiser needs, but
its decoder cannot run from a latent alone, and as a plain autoencoder it reconstructs almost
anything, anomalies included.

With a bottleneck (the default) the last stage is flattened through a Linear layer into a latent
vector, which fixes the input size. Without one (`bottleneck: false`) a 1x1 convolution gives a
spatial latent of `latent_dim` channels at 1/2**stages of the input's size: the network is fully
convolutional and runs on images of any size.

A conditional model (`conditions` classes, a conditional VAE's) sees each image's class as a
one-hot vector: as that many constant extra input channels of the encoder, and beside the latent
where the decoder starts. Without classes the layers are exactly those of an unconditional model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aecli.config import ModelConfig
from aecli.models.capabilities import latent_grid


class _Padding:
    """Pad each side up to a multiple of `step` and crop back; the identity when it already fits."""

    def __init__(self, size: tuple[int, int], step: int):
        self.size = size
        self.padded = tuple(-(-s // step) * step for s in size)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        if self.padded == self.size:
            return x
        (h, w), (ph, pw) = self.size, self.padded
        top, left = (ph - h) // 2, (pw - w) // 2
        return F.pad(x, (left, pw - w - left, top, ph - h - top), mode="replicate")

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        if self.padded == self.size:
            return x
        (h, w), (ph, pw) = self.size, self.padded
        top, left = (ph - h) // 2, (pw - w) // 2
        return x[..., top : top + h, left : left + w]


class _Backbone(nn.Module):
    """What both backbones share: the padding, and the way from a latent back to the smallest map."""

    def __init__(self, config: ModelConfig, latent_out: int, conditions: int = 0):
        super().__init__()
        self.conditions = conditions
        self.widths, self.bottleneck = config.widths, config.bottleneck
        self.step = 2 ** len(config.widths)
        self.image_size = config.image_size
        self.bottom = latent_grid(config)
        self.flat = config.widths[-1] * self.bottom**2
        self.latent_out = latent_out
        if self.bottleneck:
            self.expand = nn.Sequential(nn.Linear(config.latent_dim + conditions, self.flat), nn.ReLU(inplace=True))
        else:
            latent_in = config.latent_dim + conditions
            self.expand = nn.Sequential(nn.Conv2d(latent_in, config.widths[-1], 1), nn.ReLU(inplace=True))

    def _to_latent(self) -> list[nn.Module]:
        """The encoder's last layers: flatten and a Linear layer, or a 1x1 convolution."""
        if self.bottleneck:
            return [nn.Flatten(), nn.Linear(self.flat, self.latent_out)]
        return [nn.Conv2d(self.widths[-1], self.latent_out, 1)]

    def padding(self, x: torch.Tensor) -> _Padding:
        return _Padding(tuple(x.shape[-2:]), self.step)

    def conditioned(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """x with each image's one-hot class beside it: a vector's numbers, or a map's channels."""
        if not self.conditions:
            return x
        if condition is None:
            raise ValueError("a conditional backbone needs each image's class")
        c = condition.to(x.device, x.dtype)
        return torch.cat([x, c if x.dim() == 2 else c[:, :, None, None].expand(-1, -1, *x.shape[-2:])], dim=1)

    def unflatten(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        h = self.expand(self.conditioned(z, condition))
        return h.view(-1, self.widths[-1], self.bottom, self.bottom) if self.bottleneck else h

    def crop(self, x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        """Back to the input's size; a bare latent decodes to the model's size when its grid is the model's."""
        if size is None:
            side = x.shape[-1] // self.step
            size = (self.image_size,) * 2 if side == self.bottom else tuple(x.shape[-2:])
        return _Padding(size, self.step).crop(x)


class ConvBackbone(_Backbone):
    """The seed template: strided convs, the bottleneck, transposed convs back."""

    def __init__(self, config: ModelConfig, latent_out: int, conditions: int = 0):
        super().__init__(config, latent_out, conditions)
        widths, channels = config.widths, config.channels
        layers, prev = [], channels + conditions
        for w in widths:
            layers += [nn.Conv2d(prev, w, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            prev = w
        self.encoder = nn.Sequential(*layers, *self._to_latent())
        layers = []
        for w_in, w_out in zip(widths[::-1], [*widths[-2::-1], channels]):
            layers += [upsampling(w_in, w_out, config.upsample), nn.ReLU(inplace=True)]
        self.decoder = nn.Sequential(*layers[:-1])  # the last stage gives logits: no ReLU

    def encode(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.encoder(self.conditioned(self.padding(x).pad(x), condition)), []

    def decode(self, z, skips=None, size: tuple[int, int] | None = None, condition=None) -> torch.Tensor:
        return self.crop(self.decoder(self.unflatten(z, condition)), size)


def upsampling(c_in: int, c_out: int, how: str) -> nn.Module:
    """Twice the size: a transposed 4x4 convolution, or nearest-neighbour resizing then a 3x3
    convolution, which leaves no checkerboard marks (Odena et al., Distill 2016)."""
    if how == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1))
    return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)


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
    """An encoder-decoder with skip connections at every scale, and the same bottleneck."""

    def __init__(self, config: ModelConfig, latent_out: int, conditions: int = 0):
        super().__init__(config, latent_out, conditions)
        widths, channels = config.widths, config.channels
        self.stem = _block(channels + conditions, widths[0])
        self.downs = nn.ModuleList()
        for w_in, w_out in zip(widths, [*widths[1:], widths[-1]]):
            self.downs.append(nn.Sequential(nn.Conv2d(w_in, w_out, 3, stride=2, padding=1), nn.ReLU(inplace=True)))
        # the stages below the stem refine what each downsampling produced
        self.refine = nn.ModuleList(_block(w, w) for w in widths[1:])
        self.to_latent = nn.Sequential(*self._to_latent())
        self.ups, self.merges = nn.ModuleList(), nn.ModuleList()
        for w_in, w_out in zip([widths[-1], *widths[:0:-1]], widths[::-1]):
            self.ups.append(upsampling(w_in, w_out, config.upsample))
            self.merges.append(_block(2 * w_out, w_out))
        self.head = nn.Conv2d(widths[0], channels, 1)

    def encode(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.stem(self.conditioned(self.padding(x).pad(x), condition))
        skips = [h]
        for i, down in enumerate(self.downs):
            h = down(h)
            if i < len(self.refine):
                h = self.refine[i](h)
                skips.append(h)
        return self.to_latent(h), skips

    def decode(self, z, skips=None, size: tuple[int, int] | None = None, condition=None) -> torch.Tensor:
        if not skips:
            raise ValueError("a unet decodes only with its encoder's skip connections")
        h = self.unflatten(z, condition)
        for up, merge, skip in zip(self.ups, self.merges, reversed(skips)):
            h = merge(torch.cat([up(h), skip], dim=1))
        return self.crop(self.head(h), size)


BACKBONES = {"conv": ConvBackbone, "unet": UNetBackbone}


def make_backbone(config: ModelConfig, latent_out: int, conditions: int = 0) -> _Backbone:
    return BACKBONES[config.arch](config, latent_out, conditions)


def pixel_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-pixel loss, unreduced; logits in float32 so bf16 autocast never hurts the loss."""
    logits = logits.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return F.mse_loss(torch.sigmoid(logits), target, reduction="none")

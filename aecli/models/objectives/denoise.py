"""`denoising`: trained on corrupted inputs to predict the clean image (Vincent et al., 2008)."""

from __future__ import annotations

from aecli.models.objectives.reconstruct import Reconstruct
from aecli.models.registry import register
from aecli.settings import Setting, Span

KINDS = ("gaussian", "salt-pepper", "mask")  # what `mixed` picks from
PHOTON_KINDS = ("poisson", "poisson-gaussian")  # a sensor's noise: photon counts at --gain, then read noise


@register
class Denoise(Reconstruct):
    name = "denoising"
    summary = "give back the clean image from a corrupted one"
    settings = (
        Setting("sigma", 0.2, "Noise strength: the gaussian's std, or the fraction of pixels hit "
                "(poisson-gaussian: the read noise's std). A range LO:HI (e.g. 0:0.2) draws one level per "
                "image, uniformly, and trains one model for every level in it: denoising then needs no level.",
                kind=Span, low=0, high=1),
        Setting("noise", "gaussian", "Corruption: gaussian, salt-pepper, mask, mixed (one of those three per "
                "batch), poisson (photon noise at --gain) or poisson-gaussian (and read noise of std --sigma).",
                choices=(*KINDS, "mixed", *PHOTON_KINDS)),
        # 30 photons at white: a dim, visibly grainy picture (PSNR about 20 dB at mid-grey)
        Setting("gain", 30.0, "Photons at full intensity, for the poisson kinds of --noise (fewer: noisier); "
                "the other kinds ignore it.", low=0, low_open=True),
        # unset: on with skip connections, off through a bottleneck alone (noise cannot pass a latent);
        # docs/benchmarks.md measures it. Files from before the setting lack it and load as off
        Setting("residual", None, "Predict the noise and give back the input less it (residual learning, "
                "as DnCNN): the network learns only what to take away, so a light noise is easy and one "
                "model serves a range of levels. Off, the network predicts the clean image, as a bottleneck "
                "model must (the noise cannot pass its latent).", kind=bool, unset="on for unet, off for conv"),
        Setting("augment", False, "Show each training image flipped and turned by a random quarter turn "
                "(one of its 8 views): more data for free, which photographs need."),
    )  # fmt: skip
    # skip connections carry the detail a denoiser must keep; it learns local detail, which wants
    # more and smaller steps than the seed recipe
    defaults = {"arch": "unet", "epochs": 20, "batch_size": 32, "lr": 2e-3}
    denoises = True

    def loss(self, model, batch):
        """The clean image against the model's estimate from a corrupted copy (of a random view, with --augment)."""
        from aecli.models.backbones import pixel_loss

        x = dihedral(batch["images"]) if self.config.augment else batch["images"]
        seen = self.corrupt(x)
        z, skips = self.latent(model, seen)
        out = model.net.decode(z, skips)
        if not self.config.residual:
            return {"loss": pixel_loss(out, x, self.config.loss).mean()}
        estimate = seen.float() - out.float()  # unclamped, so pixels past 0 or 1 still learn
        if self.config.loss == "bce":
            return {"loss": pixel_loss(estimate.clamp(1e-4, 1 - 1e-4).logit(), x, "bce").mean()}
        return {"loss": (estimate - x).square().mean()}

    def corrupt(self, x):
        return corrupt(x, self.config.noise, levels(self.config.sigma, x), self.config.gain)

    def pixels(self, seen, out):
        """With --residual, the input less the predicted noise; otherwise the sigmoid of logits."""
        if not self.config.residual:
            return super().pixels(seen, out)
        return (seen.float() - out.float()).clamp(0, 1)

    @classmethod
    def needs_input(cls, config):
        return bool(config.residual)

    @classmethod
    def resolved(cls, config):
        """Residual unless told, where skip connections can carry the noise to the output."""
        from aecli.models.capabilities import SKIP_ARCHS

        return config if config.residual is not None else config.replace(residual=config.arch in SKIP_ARCHS)


def dihedral(x):
    """Each image of a batch in one of its 8 views (flips and quarter turns), drawn at random; only
    the 4 that keep the shape when the images are not square."""
    import torch

    from aecli.models.symmetries import SYMMETRIES, transformed

    views = torch.randint(SYMMETRIES, (len(x),), device=x.device)
    if x.shape[-1] != x.shape[-2]:
        views = views - views % 2  # half turns and flips only
    return transformed(x, views)


def levels(sigma: float | list[float], x):
    """One number as it is; for a range [lo, hi], one level per image drawn uniformly, shaped to
    broadcast over (B, C, H, W)."""
    import torch

    if not isinstance(sigma, list):
        return sigma
    lo, hi = sigma
    return (lo + (hi - lo) * torch.rand(len(x), dtype=x.dtype, device=x.device)).view(-1, 1, 1, 1)


def corrupt(x, kind: str, amount, gain: float = 30.0, generator=None):
    """A corrupted copy of pixels in [0, 1]; `amount` (a number, or one per image) is the std, the
    fraction hit, or the read noise's std.

    `mixed` picks one kind per call, so a denoiser trained on it sees all of them. The photon kinds
    count Poisson(gain * x) photons and scale back: mean x, variance x / gain (plus amount²).
    `generator` seeds the draws (ae denoise --add-noise); None: torch's global one.
    """
    import torch

    def normal():
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)

    def uniform():
        return torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)

    if kind == "mixed":
        kind = KINDS[int(torch.randint(len(KINDS), (), generator=generator))]
    if kind == "gaussian":
        return (x + amount * normal()).clamp(0, 1)
    if kind in PHOTON_KINDS:
        counts = torch.poisson(x.clamp(0, 1) * gain, generator=generator)
        noisy = counts / gain + (amount * normal() if kind == "poisson-gaussian" else 0)
        return noisy.clamp(0, 1)
    hit = uniform() < amount
    if kind == "salt-pepper":
        return torch.where(hit, (uniform() < 0.5).to(x.dtype), x)
    if kind == "mask":
        return x.masked_fill(hit, 0.0)
    raise ValueError(f"unknown noise kind {kind!r}")

"""The model's part of each exported graph: torch modules that torch.export traces.

Each takes float batches in [0, 1] with the model's channels, (N, C, S, S) at the model's size (or,
for a fully convolutional model's reconstruction, sides that are multiples of 2**stages), and
calls the model's own methods, so the graph computes what `ae` computes. Everything runs in
float32, as scores.image_scores does; latent distances and SSIM in float64, as `ae` does too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from aecli.scoring import thresholds
from aecli.scoring.quality import _C1, _C2
from aecli.scoring.scores import DEFAULT_METRIC, FALLBACK_METRIC, SUMS, LatentGaussian


class Encode(nn.Module):
    """One latent row per image, as `ae encode` writes it: a spatial latent (C, h, w) flattened,
    a VAE's posterior mean."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x).flatten(1)


class Decode(nn.Module):
    """Images (N, S, S, C) in [0, 1], channels last as the pixels that went in, from latent rows
    (as `ae decode` reads them)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.view(-1, *self.model.capabilities.latent_shape)
        return self.model.decode(z).permute(0, 2, 3, 1)


class Reconstruct(nn.Module):
    """The reconstruction, (N, C, H, W) in [0, 1]: a denoiser's clean estimate."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Functions(nn.Module):
    """Every function's model part in one module, so that torch traces the model once (about 3 s
    where four traces took 10: most of an export's time is torch's per-call set-up), and the ONNX
    graph is then cut into one graph per function (graphs.trace).

    Inputs: model-sized images (encode, score, and a bottleneck model's reconstruction), latents
    (decode), and for a fully convolutional model images of any size (its reconstruction).
    """

    def __init__(self, model: nn.Module, file: Any, fpr: float):
        super().__init__()
        self.encode, self.decode, self.reconstruct = Encode(model), Decode(model), Reconstruct(model)
        self.score = Score(model, file, fpr)

    def forward(
        self, x: torch.Tensor, z: torch.Tensor | None = None, native: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        outputs = [self.encode(x)]
        if z is not None:
            outputs.append(self.decode(z))
        outputs.append(self.reconstruct(x if native is None else native))
        return (*outputs, *self.score(x))


class Score(nn.Module):
    """Every anomaly metric `ae score` computes (scores.image_scores, then add_combined), whether the
    default metric passes its calibrated threshold, the per-pixel error map that `--maps` draws,
    and the reconstruction and input as the model saw them (channels last).

    `latent` needs the training latents' Gaussian, `combined` also the calibration's median and MAD
    of mse and latent: a file without them gets the metrics it has, as `ae score` does.
    """

    def __init__(self, model: nn.Module, file: Any, fpr: float):
        super().__init__()
        self.model, size = model, model.config.image_size
        stats = file.latent_stats
        self.gaussian = stats is not None and stats.get("n", 0) > 1  # as scores.gaussian_of
        if self.gaussian:
            gaussian = LatentGaussian(stats)
            self.register_buffer("mean", gaussian.mean)
            self.register_buffer("precision", gaussian.precision)
        measured = (file.calibration or {}).get("metrics", {})
        # scores.add_combined's sums: each term standardised in float32 (numpy casts the stored floats to
        # the scores' type), the terms summed in float64
        self.sums = {
            total: [(name, np.float32(measured[name]["median"]), np.float32(max(measured[name]["mad"], 1e-12)))
                    for name in parts]
            for total, parts in SUMS.items()
            if self.gaussian and all(k in measured for k in parts)
        }  # fmt: skip
        window, blur_rows, blur_cols = _ssim_blur(size)
        self.window = window
        self.register_buffer("blur_rows", blur_rows)
        self.register_buffer("blur_cols", blur_cols)
        with torch.no_grad():
            probe = self.metrics(torch.zeros(1, model.config.channels, size, size))
        self.metric_names = list(probe)
        # the default metric as scores.assess picks it, and its threshold as thresholds.choose("auto") does
        preferred = model.capabilities.default_metric or DEFAULT_METRIC
        self.default_metric = preferred if preferred in probe else FALLBACK_METRIC
        self.thresholds = {
            name: thresholds.choose("auto", np.empty(0), name, file.calibration, fpr).value
            for name in self.metric_names
            if name in measured
        }
        self.flags = self.default_metric in self.thresholds

    @property
    def output_names(self) -> list[str]:
        return [*self.metric_names, *(["anomalous"] if self.flags else []), "map", "reconstruction", "fitted"]

    def metrics(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        recon, z = self.model.analyse(x)
        return self._metrics(x, recon, z)

    def _metrics(self, x: torch.Tensor, recon: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        diff = recon - x
        bce = nn.functional.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), x, reduction="none")
        scores = {
            "mse": diff.pow(2).flatten(1).mean(1),
            "mae": diff.abs().flatten(1).mean(1),
            "bce": bce.flatten(1).mean(1),
            "ssim": 1 - self.ssim(recon, x),
        }
        if self.gaussian:  # LatentGaussian.distance, in float64
            d = z.flatten(1).double() - self.mean
            scores["latent"] = ((d @ self.precision) * d).sum(1).float()
        scores.update(self.model.scores(x, recon))
        for total, terms in self.sums.items():
            scores[total] = sum(((scores[name] - median) / mad).double() for name, median, mad in terms).float()
        return {k: v.float() for k, v in scores.items()}

    def ssim(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """quality.ssim per image, its Gaussian blur as two float64 matrix products (onnxruntime has
        no float64 convolution); the window is the outer product of a 1-D Gaussian, so the products
        give the same weighted sums, summed in another order."""
        x, y = x.double(), reference.double()

        def blur(t: torch.Tensor) -> torch.Tensor:
            return self.blur_rows @ t @ self.blur_cols

        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        n = self.window * self.window
        vx, vy, cxy = (v * n / (n - 1) for v in (vx, vy, cxy))
        ssim_map = ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))
        return ssim_map.flatten(1).mean(1).float()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        recon, z = self.model.analyse(x)
        scores = self._metrics(x, recon, z)
        outputs = [scores[name] for name in self.metric_names]
        if self.flags:  # numpy compares float32 scores with a float threshold in float32 (NEP 50)
            threshold = torch.tensor(self.thresholds[self.default_metric], dtype=torch.float32)
            outputs.append(scores[self.default_metric] > threshold)
        own = self.model.anomaly_map(x, recon)  # maps.anomaly_map: the model's own, else the error over channels
        outputs.append(own.float() if own is not None else (recon - x).abs().mean(1))
        outputs += [recon.permute(0, 2, 3, 1), x.permute(0, 2, 3, 1)]
        return tuple(outputs)


def _ssim_blur(size: int, window: int = 11, sigma: float = 1.5) -> tuple[int, torch.Tensor, torch.Tensor]:
    """quality.ssim_map's window for size x size images, as a (size', size) matrix that blurs the
    rows and its transpose for the columns: each row holds the 1-D Gaussian at one valid offset."""
    window = min(window, size)
    window -= 1 - window % 2
    t = torch.arange(window, dtype=torch.float32) - (window - 1) / 2  # quality._window, in float32
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = (g / g.sum()).double()
    rows = torch.zeros(size - window + 1, size, dtype=torch.float64)
    for i in range(size - window + 1):
        rows[i, i : i + window] = g
    return window, rows, rows.T.contiguous()

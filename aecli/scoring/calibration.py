"""What a trained model's latents and anomaly scores look like on normal data: the step after training.

Once training ends, `ae train` fits a Gaussian to the training latents (latent distances are
measured to it, and plain models sample from it) and a Gaussian mixture (samplers.py), then scores the held-out images with every
metric; `ae calibrate` repeats the second half on known-normal images later. Both are stored in
the model file, so `ae score --threshold auto` picks a threshold at a chosen false-positive rate.

The passes here see one process's shard of the images and return its local results; the caller
gathers them (see train/loop.py and the `calibrate` command).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aecli import runtime
from aecli.data import Batch
from aecli.scoring.scores import SUMS, LatentGaussian, Tiling, add_combined, batch_scores

QUANTILE_POINTS = 1001  # the quantile function at 0, 0.1 %, ..., 100 %: any --fpr down to 0.001


def _round(values: np.ndarray | float, digits: int = 6) -> Any:
    """Six significant digits: exact enough for thresholds, short enough for metadata."""
    rounded = np.vectorize(lambda v: float(f"{v:.{digits}g}"))(np.asarray(values, dtype=np.float64))
    return rounded.tolist()


def summarize(scores: np.ndarray) -> dict[str, Any]:
    """Robust and plain statistics of one score per image, with the whole quantile function."""
    scores = np.asarray(scores, dtype=np.float64)
    median = float(np.median(scores))
    return {
        "n": int(scores.size),
        "mean": _round(scores.mean()),
        "std": _round(scores.std()),
        "median": _round(median),
        "mad": _round(np.median(np.abs(scores - median))),
        "p99": _round(np.quantile(scores, 0.99)),
        "quantiles": _round(np.quantile(scores, np.linspace(0, 1, QUANTILE_POINTS))),
    }


def record(
    values: dict[str, np.ndarray], split: str, device: str = "cpu", pixel_variance: float | None = None
) -> dict[str, Any]:
    """The calibration record of every metric's scores on normal images, `combined` included,
    and where they were computed (scores are float32 on every device: see scores.image_scores);
    with the images' variance around their mean image (PixelMoments), when it was measured."""
    raw = {k: v for k, v in values.items() if k not in SUMS}
    result = {"split": split, "device": device, "precision": "float32", "metrics": {}}
    if pixel_variance is not None:
        result["pixel_variance"] = _round(pixel_variance)
    result["metrics"] = {name: summarize(v) for name, v in raw.items()}
    add_combined(raw, result)  # standardised by the record just made
    for name in SUMS:
        if name in raw:
            result["metrics"][name] = summarize(raw[name])
    return result


def latent_stats(latents: np.ndarray, split: str) -> dict[str, Any] | None:
    """Mean and covariance of latent rows: the Gaussian that non-VAE models sample from; and the
    Gaussian mixture that `ae sample --sampler gmm` draws from (samplers.py)."""
    from aecli import samplers

    if len(latents) < 2:
        return None
    z = np.asarray(latents, dtype=np.float64)
    stats = {"split": split, "n": len(z), "mean": _round(z.mean(0)), "cov": _round(np.cov(z, rowvar=False))}
    return {**stats, "mixture": samplers.mixture_record(z)}


LATENT_FIT_LIMIT = 20_000  # enough for a 32-d mean and covariance; bounds the extra pass


def thin(rows: np.ndarray) -> np.ndarray:
    """At most LATENT_FIT_LIMIT of the rows, evenly spread."""
    if len(rows) <= LATENT_FIT_LIMIT:
        return rows
    return rows[np.linspace(0, len(rows) - 1, LATENT_FIT_LIMIT).astype(np.int64)]


@torch.no_grad()
def latents_of(model, device: torch.device, batches: Iterable[Batch]) -> list[np.ndarray]:
    """Each batch's latents, one flat row per image (model in eval mode), in float32 as scores are."""
    rows = []
    for batch in batches:
        if len(batch.pixels):
            with torch.autocast(device.type, enabled=False):
                rows.append(model.encode(runtime.to_device(batch.pixels, device)).flatten(1).cpu().numpy())
    return rows


@dataclass
class PixelMoments:
    """Per-pixel sums over model-sized images, for their variance around their mean image: the
    error of a model that learnt only the average image, which a trained one must clearly beat."""

    n: int = 0
    total: np.ndarray | float = 0.0
    squares: np.ndarray | float = 0.0

    def add(self, pixels: torch.Tensor) -> None:
        x = pixels.double().cpu().numpy()
        self.n, self.total, self.squares = self.n + len(x), self.total + x.sum(0), self.squares + (x * x).sum(0)

    @classmethod
    def merge(cls, parts: list[PixelMoments]) -> PixelMoments:
        return cls(sum(p.n for p in parts), sum(p.total for p in parts), sum(p.squares for p in parts))

    def variance(self) -> float | None:
        if self.n < 2:
            return None
        mean = self.total / self.n
        return float(np.mean(self.squares / self.n - mean * mean))


@torch.no_grad()
def scores_of(
    model, device: torch.device, batches: Iterable[Batch], latents: dict[str, Any] | None,
    tiling: Tiling | None = None, moments: PixelMoments | None = None,
) -> dict[str, list[np.ndarray]]:  # fmt: skip
    """Every metric's raw scores, batch by batch, as `ae score` computes them (in tiles with a
    tiling); `latent` measured to the `latents` Gaussian. Model-sized images add to `moments`."""
    gaussian = LatentGaussian(latents) if latents else None
    values: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        if len(batch.pixels):
            if moments is not None and tiling is None:
                moments.add(batch.pixels)
            raw, _, _ = batch_scores(model, device, batch.pixels, gaussian, tiling)
            for name, v in raw.items():
                values.setdefault(name, []).append(v.numpy())
    return values

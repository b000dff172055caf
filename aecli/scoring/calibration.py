"""What a trained model's reconstruction errors and latents look like on held-out normal data.

Stored in the model file by `ae train` (and refreshed by `ae calibrate` later) so that
`ae score --threshold auto` can pick a threshold at a chosen false-positive rate, and so that
plain and denoising models can sample from a Gaussian fitted to their latents.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


def calibration(errors: dict[str, np.ndarray], split: str) -> dict[str, Any]:
    return {"split": split, "metrics": {name: summarize(values) for name, values in errors.items()}}


def latent_stats(latents: np.ndarray, split: str) -> dict[str, Any] | None:
    """Mean and covariance of latent vectors: the Gaussian that non-VAE models sample from."""
    if len(latents) < 2:
        return None
    z = np.asarray(latents, dtype=np.float64)
    return {"split": split, "n": len(z), "mean": _round(z.mean(0)), "cov": _round(np.cov(z, rowvar=False))}

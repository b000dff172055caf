"""Choosing the score above which an image is flagged, and saying how it was chosen.

auto           the calibration stored in the model file (scores of held-out normal images
               at training, or of `ae calibrate`'s data) at a false-positive rate `fpr`;
               without it, median + k·MAD of the scored set itself, k matching `fpr` for
               normally distributed scores
0.0123         a number
p95            a percentile of the scored set
contamination  flag the top fraction of the scored set (as PyOD does)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from aecli.errors import UsageError

MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution times this is its standard deviation


TOO_FEW_TAIL = 10  # fewer calibration images than this above the threshold: it is one of a handful of scores


@dataclass
class Threshold:
    value: float
    how: str  # one sentence for the summary on stderr
    caveat: str | None = None  # what the user should know before trusting it, for a warning
    fpr: float | None = None  # the false-positive rate it was calibrated for on normal images (auto)


def parse(spec: str, fpr: float | None = None, contamination: float | None = None) -> str | float:
    """`auto`, a finite number, or `pN`; anything else is a usage error naming the forms. --fpr
    tunes auto alone and --contamination replaces the threshold, so neither goes with another."""
    spec = spec.strip().lower()
    if contamination is not None and (spec != "auto" or fpr is not None):
        given = f"--threshold {spec}" if spec != "auto" else "--fpr"
        raise UsageError(f"--contamination sets the threshold itself; leave out {given}")
    if fpr is not None and spec != "auto":
        raise UsageError(f"--fpr sets --threshold auto's rate; leave it out with --threshold {spec}")
    if spec == "auto" or re.fullmatch(r"p\d+(\.\d+)?", spec):
        if spec != "auto" and not 0 <= float(spec[1:]) <= 100:
            raise UsageError(f"--threshold {spec}: a percentile is p0 to p100")
        return spec
    try:
        value = float(spec)
    except ValueError:
        raise UsageError(f"--threshold {spec!r}: use auto, a number (0.0123) or a percentile (p95)") from None
    if not math.isfinite(value):
        raise UsageError(f"--threshold {spec}: a threshold is a finite number")
    return value


def choose(
    spec: str | float, scores: np.ndarray, metric: str, calibration: dict[str, Any] | None,
    fpr: float = 0.01, contamination: float | None = None,
) -> Threshold:  # fmt: skip
    """The threshold for `scores` of `metric`; flagged means `score > value`."""
    scores = np.asarray(scores, dtype=np.float64)
    if contamination is not None:
        if not 0 < contamination < 1:
            raise UsageError(f"--contamination must be between 0 and 1, got {contamination}")
        value = float(np.percentile(scores, 100 * (1 - contamination))) if len(scores) else float("inf")
        return Threshold(
            value, f"contamination {contamination:g}: the top {contamination:.1%} of {len(scores)} scored images"
        )
    if isinstance(spec, float):
        return Threshold(spec, "given")
    if spec.startswith("p"):
        q = float(spec[1:])
        value = float(np.percentile(scores, q)) if len(scores) else float("inf")
        return Threshold(value, f"{spec}: the {q:g}th percentile of {len(scores)} scored images")
    if not 0 < fpr < 1:
        raise UsageError(f"--fpr must be between 0 and 1, got {fpr}")
    stats = (calibration or {}).get("metrics", {}).get(metric)
    if stats:
        quantiles = np.asarray(stats["quantiles"], dtype=np.float64)
        value = float(np.interp(1 - fpr, np.linspace(0, 1, len(quantiles)), quantiles))
        n = stats["n"]
        return Threshold(
            value,
            f"auto: {metric} at false-positive rate {fpr:g} on {n} {calibration['split']} images "
            f"(the model file's calibration)",
            _thin_tail(n, fpr),
            fpr,
        )
    if not len(scores):
        return Threshold(float("inf"), "auto: nothing scored")
    k = NormalDist().inv_cdf(1 - fpr) * MAD_TO_SIGMA
    median = float(np.median(scores))
    mad = float(np.median(np.abs(scores - median)))
    return Threshold(
        median + k * mad,
        f"auto without calibration for {metric} in the model file: median + {k:.2f}·MAD of the "
        f"{len(scores)} scored images (false-positive rate {fpr:g} if they are mostly normal)",
    )


def _thin_tail(n: int, fpr: float) -> str | None:
    """On n calibration images a false-positive rate is only resolved in steps of 1/n, and at
    n·fpr < 10 the threshold rests on the few highest scores: say so instead of implying precision."""
    if n * fpr >= TOO_FEW_TAIL:
        return None
    top = max(1, round(n * fpr))
    return (
        f"--fpr {fpr:g} on {n} calibration images: the threshold rests on the top {top} score(s), and "
        f"false-positive rates resolve only in steps of {1 / max(n, 1):.2g}; calibrate on at least "
        f"{int(np.ceil(TOO_FEW_TAIL / fpr))} normal images (ae calibrate)"
    )

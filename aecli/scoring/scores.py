"""Anomaly scores: one number per image, higher means more anomalous.

Every metric comes from one pass of the model (`image_scores`), both when training calibrates
a model file on held-out normal data and when `ae score` scores new images, so a threshold
learnt on one side means the same on the other.

  mse, mae, bce  mean per-pixel reconstruction error (for a denoiser: of its clean estimate)
  ssim           1 - SSIM(input, reconstruction): structure rather than intensity
  latent         squared Mahalanobis distance of the latent to the training latents' Gaussian
  combined       mse and latent, each standardised by its calibration (median, MAD), summed
  elbo           VAEs: negative ELBO with z at the posterior mean (deterministic)
  transforms     geometric: how unsure its head is of each rotation and flip the image is shown in
  geometric      geometric: mse, latent and transforms, standardised as combined's (its default metric)
  segmentation   draem: the predicted anomaly map's smoothed maximum (its default metric)
  rarity         vqvae: how unlikely the image's code is under the code prior, nats per cell

A model trained on patches scores larger images in tiles at their own resolution, each metric the
highest over the image's tiles (tiled.py), in training's calibration and in `ae score` alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aecli import runtime
from aecli.data import ImageSet
from aecli.errors import UsageError
from aecli.scoring.quality import ssim
from aecli.scoring.tiled import fit_for_tiles, score_tiled

def _owners() -> dict[str, str]:
    """Each metric of an objective's own, and the variant it belongs to (the first, if several)."""
    from aecli.models.registry import list_variants, objective_class

    owners: dict[str, str] = {}
    for variant in list_variants():
        for metric in objective_class(variant).metrics:
            owners.setdefault(metric, variant)
    return owners


METRIC_OWNERS = _owners()
METRICS = ("mse", "mae", "bce", "ssim", "latent", "combined", *METRIC_OWNERS)
# The best mean AUROC in benchmarks/oneclass_fmnist.py (0.921 against mse's 0.892 over the ten
# Fashion-MNIST classes); mse where a model file lacks what combined needs.
DEFAULT_METRIC = "combined"
FALLBACK_METRIC = "mse"


class LatentGaussian:
    """The training latents' mean and (ridge-regularised) precision, for Mahalanobis distances."""

    def __init__(self, stats: dict[str, Any]):
        mean = np.asarray(stats["mean"], dtype=np.float64)
        cov = np.asarray(stats["cov"], dtype=np.float64)
        ridge = 1e-3 * max(np.trace(cov) / len(cov), 1e-12)  # a few latent axes barely vary: keep them finite
        self.mean = torch.as_tensor(mean)
        self.precision = torch.as_tensor(np.linalg.inv(cov + ridge * np.eye(len(cov))))

    def distance(self, z: torch.Tensor) -> torch.Tensor:
        d = z.double().cpu() - self.mean
        return ((d @ self.precision) * d).sum(1).float()


def image_scores(
    model, x: torch.Tensor, gaussian: LatentGaussian | None
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Every raw metric for a batch (CPU tensors of shape (B,)), the reconstruction and the latent.

    All in float32, the forward pass included, whatever autocast the caller runs under: a
    threshold calibrated on one device must mean the same on another, and bf16's rounding moves
    latent distances enough to flip decisions (tests/test_score.py measures it).
    """
    with torch.autocast(x.device.type, enabled=False):
        recon, z = model.analyse(x.float())
        recon, x = recon.float(), x.float()
        diff = recon - x
        scores = {
            "mse": diff.pow(2).flatten(1).mean(1),
            "mae": diff.abs().flatten(1).mean(1),
            "bce": F.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), x, reduction="none").flatten(1).mean(1),
            "ssim": 1 - ssim(recon.cpu(), x.cpu()),  # float64 inside: CPU, where every backend has it
        }
        if gaussian is not None:
            scores["latent"] = gaussian.distance(z.flatten(1))
        scores.update(model.scores(x, recon))
    return {k: v.float().cpu() for k, v in scores.items()}, recon, z.float()


def greyness(images: torch.Tensor | list[torch.Tensor]) -> np.ndarray:
    """Each image's mean binary entropy per pixel, over ln 2: 0 for black and white, 1 for mid-grey.

    Binary cross-entropy against a grey pixel includes that pixel's own entropy, however well it
    is reconstructed: on grey images `bce` ranks them by their grey levels, not their anomalies.
    """
    means = []
    for x in images:
        p = x.double().clamp(1e-6, 1 - 1e-6)
        means.append(float((-(p * p.log() + (1 - p) * (1 - p).log())).mean() / np.log(2)))
    return np.asarray(means, dtype=np.float32)


BCE_GREYNESS = 0.25  # Fashion-MNIST is 0.35, where bce's mean AUROC is 0.70 against mse's 0.89


def metric_caveat(metric: str, scores: Scores) -> str | None:
    """Why a metric may not suit these images, for a warning; None when nothing is known against it."""
    if metric != "bce" or scores.greyness is None or not len(scores.greyness):
        return None
    grey = float(scores.greyness.mean())
    if grey <= BCE_GREYNESS:
        return None
    return (
        f"--metric bce suits near-binary images (mostly black and white), and these are grey (greyness "
        f"{grey:.2f}, above {BCE_GREYNESS}): it ranks them by their grey levels more than by anomalies; "
        "use mse, ssim or combined"
    )


# Metrics that are sums of others, each standardised by its calibration (median and MAD).
SUMS = {"combined": ("mse", "latent"), "geometric": ("mse", "latent", "transforms")}


def add_combined(scores: dict[str, np.ndarray], calibration: dict[str, Any] | None) -> None:
    """Each of SUMS whose parts the scores and their calibration have: `combined` from mse and
    latent, `geometric` from those and a geometric model's transforms."""
    metrics = (calibration or {}).get("metrics", {})
    for total_name, parts in SUMS.items():
        if not all(k in scores and k in metrics for k in parts):
            continue
        total = np.zeros_like(scores["mse"], dtype=np.float64)
        for name in parts:
            stats = metrics[name]
            total += (scores[name] - stats["median"]) / max(stats["mad"], 1e-12)
        scores[total_name] = total.astype(np.float32)


@dataclass
class Scores:
    """One score per image that loaded, in input order, for every metric."""

    values: dict[str, np.ndarray]
    index: np.ndarray
    sources: list[str]
    skipped: int = 0
    labels: np.ndarray | None = None  # 0 normal, 1 anomalous, when known
    greyness: np.ndarray | None = None  # per image: see greyness(); what tells whether bce suits them

    def of(self, metric: str) -> np.ndarray:
        if metric not in self.values:
            raise UsageError(_unavailable(metric))
        return self.values[metric]

    @classmethod
    def merge(cls, parts: list[Scores]) -> Scores:
        """Shards in order, as one (what distributed.gathered calls)."""
        names = dict.fromkeys(k for p in parts for k in p.values)  # a shard with no images has none
        greys = [p.greyness for p in parts if p.greyness is not None]
        return cls(
            {k: np.concatenate([p.values[k] for p in parts if k in p.values]) for k in names},
            np.concatenate([p.index for p in parts]), [s for p in parts for s in p.sources],
            sum(p.skipped for p in parts), greyness=np.concatenate(greys) if greys else None,
        )  # fmt: skip


def check_metric(metric: str | None) -> None:
    """An unknown metric is an error before any image is scored."""
    if metric is not None and metric not in METRICS:
        raise UsageError(_unavailable(metric))


def _unavailable(metric: str) -> str:
    if metric in METRIC_OWNERS:
        return f"metric {metric} needs a model trained with --variant {METRIC_OWNERS[metric]}"
    if metric in ("latent", "combined"):  # `ae calibrate` refits thresholds; only a finished run stores latent stats
        return (
            f"metric {metric} needs the latent statistics {'and calibration ' if metric == 'combined' else ''}that "
            "`ae train` stores when a run ends; this file lacks them (finish the run with --resume, or "
            "`ae calibrate` it if it has latent stats, or score with --metric mse)"
        )
    return f"unknown metric '{metric}' (known: {', '.join(METRICS)})"


def gaussian_of(loaded) -> LatentGaussian | None:
    stats = loaded.file.latent_stats
    return LatentGaussian(stats) if stats and stats.get("n", 0) > 1 else None


@dataclass(frozen=True)
class Tiling:
    """Score each image in tiles of the model's size at its own resolution, not resized (tiled.py)."""

    size: int
    channels: int
    batch_size: int = 256  # tiles per forward pass


def batch_scores(model, device, pixels, gaussian: LatentGaussian | None, tiling: Tiling | None = None):
    """Every raw metric per image of a batch, the reconstructions, and the images as scored:
    the batch itself, or with a tiling each image at its own size (a list), as maps show them."""
    if tiling is None:
        raw, recon, _ = image_scores(model, runtime.to_device(pixels, device), gaussian)
        return raw, recon.cpu(), pixels

    def score_tiles(pieces: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        raw, recon, _ = image_scores(model, runtime.to_device(pieces, device), gaussian)
        return raw, recon

    shown = [fit_for_tiles(image, tiling.size, tiling.channels) for image in pixels]
    results = [score_tiled(score_tiles, x, tiling.size, tiling.batch_size) for x in shown]
    raw = {name: torch.cat([scores[name] for scores, _ in results]) for name in results[0][0]}
    return raw, [recon for _, recon in results], shown


@torch.no_grad()
def score_batches(
    loaded, images: ImageSet, rows: np.ndarray | None = None, *, tiles: bool | None = None, **options
) -> Iterator[tuple[Any, dict[str, torch.Tensor], Any]]:
    """(batch, raw scores, reconstructions) for the images at `rows`, in order; options as infer.batches.

    tiles=None scores in tiles at native resolution where the model was trained on patches
    (Loaded.tiling), resized to the model's size otherwise; True or False decides.
    """
    from aecli.infer import batches

    gaussian = gaussian_of(loaded)
    tiling = loaded.tiling(tiles, options.get("batch_size", 256))
    resized = tiling is None  # the model's input as loaded: it may stay on the device it was decoded on
    for batch in batches(loaded, images, rows, native=not resized, on_device=resized, **options):
        if not len(batch.index):  # every image of the batch was skipped
            yield batch, {}, torch.empty(0)
            continue
        raw, recon, shown = batch_scores(loaded.model, loaded.device, batch.pixels, gaussian, tiling)
        yield dataclasses.replace(batch, pixels=shown.cpu() if resized else shown), raw, recon


def score(loaded, images: ImageSet, **options) -> Scores:
    """Every metric for every image of the set; `combined` where the calibration allows it.

    Under torchrun each process scores its block of the batches; distributed.gathered joins them
    in input order, so thresholds over the whole set come out as with one process.
    """
    collected: dict[str, list[torch.Tensor]] = {}
    index, grey, skipped = [], [], 0
    for batch, raw, _ in score_batches(loaded, images, **options):
        skipped += len(batch.skipped)
        for name, values in raw.items():
            collected.setdefault(name, []).append(values)
        index.append(batch.index.numpy())
        grey.append(greyness(batch.pixels))
    where = np.concatenate(index) if index else np.empty(0, np.int64)
    values = {k: torch.cat(v).numpy() for k, v in collected.items()}
    add_combined(values, loaded.file.calibration)
    sources = [images.name(int(i)) for i in where]
    return Scores(values, where, sources, skipped, greyness=np.concatenate(grey) if grey else None)


SHIFTED = 5  # normal images flagged at this many times the calibrated rate (and 5 % or more): not like the calibration's
SHIFT_EVIDENCE = 20  # labelled normal images needed to say so


def shift_caveat(threshold, evaluation) -> str | None:
    """Where labels show the calibrated threshold flagging normal images far more often than it was
    calibrated to: those images differ from the calibration's (another part of a scene, a slight
    change of scale or light), and the fix is to calibrate on images like them, not to trust it."""
    if threshold.fpr is None or evaluation is None or evaluation.normal < SHIFT_EVIDENCE:
        return None
    rate = evaluation.normal_flagged
    if rate < max(SHIFTED * threshold.fpr, 0.05):
        return None
    return (
        f"the calibrated threshold flags {rate:.0%} of the normal images here, against {threshold.fpr:g} on the "
        "images it was calibrated on: these differ from them; calibrate on normal images like these "
        "(ae calibrate DIR -m MODEL, docs/thresholds.md)"
    )


@dataclass
class Assessment:
    """What `ae score` reports: each image's score and verdict, the threshold and how it was chosen."""

    metric: str
    scores: Scores
    threshold: Any  # thresholds.Threshold
    flagged: np.ndarray  # bool, per scored image
    labels: np.ndarray | None = None  # per scored image, when known
    evaluation: Any = None  # metrics.Evaluation, when labels are known

    @property
    def caveats(self) -> list[str]:
        """What the user should know before trusting the verdicts: for a warning each."""
        shift = shift_caveat(self.threshold, self.evaluation)
        return [c for c in (self.threshold.caveat, metric_caveat(self.metric, self.scores), shift) if c]

    def listed(self, top: int | None = None) -> np.ndarray:
        """Positions (in scored order) of the rows to report: all in input order, or the top K."""
        values = self.scores.of(self.metric)
        return np.arange(len(values)) if top is None else np.argsort(-values, kind="stable")[:top]

    def map_rows(self, top: int | None = None, every: bool = False) -> np.ndarray:
        """Input positions that get a heatmap: the flagged (or every) image among those listed."""
        listed = self.listed(top)
        chosen = listed if every else listed[self.flagged[listed]]
        return np.sort(self.scores.index[chosen])

    def records(self, top: int | None = None) -> list[dict[str, Any]]:
        """Rows of path, score, threshold, anomalous (and label), in input order or the top K."""
        values = self.scores.of(self.metric)
        rows = []
        for k in self.listed(top):
            row = {
                "path": self.scores.sources[k],
                "score": float(values[k]),
                "threshold": self.threshold.value,
                "anomalous": bool(self.flagged[k]),
            }
            if self.labels is not None:
                row["label"] = int(self.labels[k])
            rows.append(row)
        return rows


def assess(
    loaded, scores: Scores, *, metric: str | None = None, threshold: str | float = "auto", fpr: float = 0.01,
    contamination: float | None = None, labels: np.ndarray | None = None,
) -> Assessment:  # fmt: skip
    """Choose the threshold over a whole set's scores, flag, and evaluate against labels if given.

    metric=None takes the model's own default metric if it has one (capabilities.default_metric),
    else DEFAULT_METRIC, or FALLBACK_METRIC when the model file cannot give it.
    """
    from aecli.scoring import metrics, thresholds

    check_metric(metric)
    if metric is None:
        preferred = loaded.capabilities.default_metric or DEFAULT_METRIC
        metric = preferred if preferred in scores.values or not len(scores.index) else FALLBACK_METRIC
    values = scores.of(metric)
    chosen = thresholds.choose(threshold, values, metric, loaded.file.calibration, fpr, contamination)
    result = Assessment(metric, scores, chosen, values > chosen.value)
    if labels is not None:
        result.labels = np.asarray(labels)[scores.index]
        result.evaluation = metrics.evaluate(values, result.labels, chosen.value)
    return result

"""Plots where people would rather look than read: loss curves, latent maps, score histograms.

matplotlib is the optional extra `aecli[plot]`. It is imported inside these functions only, so
no other command pays for it, and drawn on the Agg canvas, so no display is needed. Every PNG is
~800x600, written atomically, drawn with matplotlib's own defaults rather than the user's
matplotlibrc, and carries no version or date: the same inputs give the same bytes.
"""

from __future__ import annotations

import importlib
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from aecli.errors import InputError, MissingExtra, UsageError
from aecli.io.files import leader_writes, write_bytes_atomic

PROJECTIONS = ("pca", "tsne", "umap")
SIZE, DPI = (8, 6), 100  # 800x600 pixels: readable in a report or an image viewer, small on disk
MAX_CLASSES = 20  # more classes than this get a colour scale instead of a legend
_STYLE = [
    "default",  # matplotlib's defaults, not the user's matplotlibrc: the same bytes on every machine
    {
        "font.size": 11,
        "axes.titlesize": 13,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.axisbelow": True,  # grid behind bars and points
        "legend.framealpha": 0.9,  # legible where it overlaps data or the threshold line
        "legend.edgecolor": "0.85",
    },
]
_NEEDS = {
    None: ("matplotlib", "--plot needs matplotlib: pip install 'aecli[plot]'"),
    "tsne": ("sklearn", "--projection tsne needs scikit-learn: pip install scikit-learn"),
    "umap": ("umap", "--projection umap needs umap-learn: pip install umap-learn"),
}


def check_available(projection: str | None = None) -> None:
    """Fail before any work, in one line, when matplotlib or the projection's package is missing."""
    _require(None)
    if projection is None:
        return
    if projection not in PROJECTIONS:
        raise UsageError(f"unknown projection '{projection}' (use {', '.join(PROJECTIONS)})")
    if projection in _NEEDS:
        _require(projection)


def _require(what: str | None) -> Any:
    module, message = _NEEDS[what]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(message) from None


def loss_plot_path(model: Path) -> Path:
    """Where `ae train --plot` puts the loss curves: beside the model, `dae.safetensors` -> `dae.loss.png`."""
    return Path(model).with_suffix(".loss.png")


@contextmanager
def _figure(path: Path) -> Iterator[Any]:
    """A fresh Figure (no pyplot, so no global state or backend switch), saved to `path` on exit."""
    _require(None)
    from matplotlib import style
    from matplotlib.figure import Figure

    with style.context(_STYLE):
        figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
        yield figure
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    write_bytes_atomic(Path(path), buffer.getvalue())


def _spans_decades(values: np.ndarray, decades: float) -> bool:
    """Whether a log axis reads better: every value positive and max/min beyond 10**decades."""
    return bool(len(values)) and values.min() > 0 and values.max() / values.min() > 10**decades


@leader_writes
def loss_curves(history: Mapping[str, Any], path: Path, title: str | None = None) -> None:
    """Train and validation loss per epoch, from a training summary (`ae info --json`'s `training`).

    The y axis is logarithmic when the losses span more than a decade, so late epochs still show.
    """
    train = [float(v) for v in history.get("train_loss") or []]
    val = [float(v) for v in history.get("val_loss") or []]
    if not train:
        raise InputError("no epoch has finished yet, so there is no loss to plot")
    epochs = np.arange(1, len(train) + 1)
    val_epochs = epochs[len(train) - len(val) :]  # a run without validation at first lines up at the end
    marker = "o" if len(train) <= 30 else None  # points show single epochs; on long runs they only clutter
    with _figure(path) as figure:
        from matplotlib.ticker import MaxNLocator

        ax = figure.add_subplot()
        ax.plot(epochs, train, marker=marker, markersize=4, label="train")
        if val:
            ax.plot(val_epochs, val, marker=marker, markersize=4, label="validation")
            best = int(np.argmin(val))
            ax.scatter(
                [val_epochs[best]], [val[best]], s=120, facecolors="none", edgecolors="C1", linewidths=1.5, zorder=3,
                label=f"best validation {val[best]:.4g} (epoch {val_epochs[best]})",
            )  # fmt: skip
        if _spans_decades(np.array(train + val), 1):
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, len(train) + 0.5)  # whole epochs on the axis, even after just one
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss" + (" (log scale)" if ax.get_yscale() == "log" else ""))
        ax.set_title(title or "Training loss per epoch")
        ax.legend()


def pca(vectors: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The first k principal components of the rows, and the fraction of variance each explains.

    Signs are fixed (each axis's largest loading is positive), so the map does not flip between
    LAPACK builds. Fewer than k dimensions are padded with zero columns.
    """
    x = np.asarray(vectors, dtype=np.float64)
    centred = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1
    coords = (u * signs)[:, :k] * s[:k]
    total = float((s**2).sum())
    explained = (s[:k] ** 2) / total if total > 0 else np.zeros(min(k, len(s)))
    pad = k - coords.shape[1]
    return np.pad(coords, ((0, 0), (0, pad))), np.pad(explained, (0, pad))


def project(vectors: np.ndarray, projection: str = "pca", seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """2-D coordinates of the rows and the axes' labels; t-SNE and UMAP are seeded, so repeatable."""
    check_available(projection)
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if projection == "pca":
        coords, explained = pca(x, 2)
        return coords, [f"PC {i + 1} ({share:.1%} of variance)" for i, share in enumerate(explained)]
    if n < 3:
        raise InputError(f"--projection {projection} needs at least 3 latent vectors, got {n}")
    if projection == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, max(1.0, (n - 1) / 3))  # must stay below the number of points
        coords = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
        return coords, ["t-SNE 1", "t-SNE 2"]
    umap = _require("umap")
    coords = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed).fit_transform(x)
    return coords, ["UMAP 1", "UMAP 2"]


def dataset_labels(images: Any, index: Sequence[int]) -> tuple[list[int | None] | None, Sequence[str] | None]:
    """Each encoded image's class (None where unknown) and the classes' names, when the inputs carry them."""
    from aecli.data.named import class_names

    labels = [images.label(int(i)) for i in index]
    if all(k is None for k in labels):
        return None, None
    names = {class_names(part.name) for part in images.parts if getattr(part, "labels", None) is not None}
    return labels, names.pop() if len(names) == 1 else None


def _class_name(k: int, names: Sequence[str] | Mapping[int, str] | None) -> str:
    if isinstance(names, Mapping):
        return f"{k}: {names[k]}" if k in names else str(k)
    return f"{k}: {names[k]}" if names is not None and 0 <= k < len(names) else str(k)


@leader_writes
def latent_map(
    vectors: np.ndarray,
    labels: Sequence[int | None] | np.ndarray | None,
    path: Path,
    projection: str = "pca",
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    seed: int = 0,
    title: str | None = None,
) -> None:
    """A 2-D map of latent vectors, one point per image, coloured by class when labels are given.

    labels: one int (or None, unknown) per row, or None for no labels; class_names: by label.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise InputError(f"a latent map needs at least 2 latent vectors, got {len(x) if x.ndim else 0}")
    if labels is not None and len(labels) != len(x):
        raise ValueError(f"{len(labels)} labels for {len(x)} latent vectors")
    coords, axis_labels = project(x, projection, seed)
    known = None if labels is None else [None if k is None else int(k) for k in labels]
    classes = sorted({k for k in known if k is not None}) if known else []
    size = float(np.clip(4000 / len(x), 3, 40))  # many points: small dots; a handful: visible discs
    name = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}[projection]
    with _figure(path) as figure:
        from matplotlib import colormaps

        ax = figure.add_subplot()
        if not classes:
            ax.scatter(coords[:, 0], coords[:, 1], s=size, alpha=0.7, linewidths=0, label=f"{len(x)} images")
        elif len(classes) <= MAX_CLASSES:
            cmap = colormaps["tab10" if classes[-1] < 10 and classes[0] >= 0 else "tab20"]
            for position, k in enumerate(classes):
                colour = cmap(k if classes[-1] < 10 and k >= 0 else position)  # class 7 keeps its colour
                rows = np.array([label == k for label in known])
                ax.scatter(
                    coords[rows, 0], coords[rows, 1], s=size, alpha=0.7, linewidths=0, color=colour,
                    label=_class_name(k, class_names),
                )  # fmt: skip
        else:
            rows = np.array([k is not None for k in known])
            points = ax.scatter(
                coords[rows, 0], coords[rows, 1], s=size, alpha=0.7, linewidths=0,
                c=[k for k in known if k is not None], cmap="viridis",
            )  # fmt: skip
            figure.colorbar(points, ax=ax, label="class")
        if classes and None in known:
            rows = np.array([k is None for k in known])
            ax.scatter(
                coords[rows, 0], coords[rows, 1], s=size, alpha=0.5, linewidths=0, color="0.6", label="unlabelled"
            )
        if len(classes) <= MAX_CLASSES or None in known:
            outside = len(classes) > 3  # a long legend beside the map, not on top of it
            ax.legend(
                loc="upper left" if outside else "best", bbox_to_anchor=(1.01, 1) if outside else None,
                markerscale=max(1.0, 5 / np.sqrt(size)), title="class" if classes else None, frameon=not outside,
            )  # fmt: skip
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
        ax.set_title(title or f"{name} of {len(x)} latent vectors ({x.shape[1]}-D)")


def _threshold_mode(how: str | None) -> str | None:
    """A few words for the legend from thresholds.Threshold.how, which is a whole sentence."""
    if not how:
        return None
    if how.startswith("auto without calibration"):
        return "auto, median + MAD"
    rate = re.search(r"false-positive rate ([0-9.e-]+)", how)
    if how.startswith("auto") and rate:
        return f"auto at FPR {rate.group(1)}"
    return how.split(":")[0]


@leader_writes
def score_histogram(
    scores: np.ndarray,
    threshold: Any,
    path: Path,
    labels: np.ndarray | None = None,
    metric: str = "anomaly",
    auroc: float | None = None,
    title: str | None = None,
) -> None:
    """A histogram of scores with the threshold as a vertical line; with labels, normal against anomalous.

    threshold: a number, or a thresholds.Threshold (its `how` names the mode in the legend).
    labels: 0 normal, 1 anomalous per score; the AUROC goes in the title (computed if not given).
    The x axis is logarithmic when positive scores span more than two decades.
    """
    from aecli.scoring import metrics

    values = np.asarray(scores, dtype=np.float64).ravel()
    if labels is not None and len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels for {len(values)} scores")
    finite = np.isfinite(values)
    if not finite.any():
        raise InputError("no finite scores to plot")
    truth = None if labels is None else np.asarray(labels).astype(bool)[finite]
    values = values[finite]
    value = float(getattr(threshold, "value", threshold))
    mode = _threshold_mode(getattr(threshold, "how", None))
    shown = np.append(values, value) if np.isfinite(value) else values
    log = _spans_decades(shown, 2)
    bins = int(np.clip(2 * np.sqrt(len(values)), 10, 60))
    low, high = shown.min(), shown.max()
    if log:
        edges = np.geomspace(low, high, bins + 1)
    else:
        edges = np.linspace(low, high, bins + 1) if high > low else np.linspace(low - 0.5, high + 0.5, bins + 1)
    both = truth is not None and truth.any() and not truth.all()
    if both and auroc is None:
        auroc = metrics.auroc(values, truth)
    with _figure(path) as figure:
        ax = figure.add_subplot()
        if truth is None:
            ax.hist(values, edges, color="C0", alpha=0.8, label=f"{len(values)} images")
        else:
            for group, name, colour in ((False, "normal", "C0"), (True, "anomalous", "C3")):
                chosen = values[truth == group]
                if len(chosen):  # translucent fill, solid outline: a small group stays visible under a large one
                    ax.hist(chosen, edges, histtype="stepfilled", color=colour, alpha=0.4)
                    ax.hist(
                        chosen, edges, histtype="step", color=colour, linewidth=1.5, label=f"{name} ({len(chosen)})"
                    )
        if np.isfinite(value):
            flagged = int((values > value).sum())
            ax.axvline(
                value, color="black", linestyle="--", linewidth=1.5,
                label=f"threshold {value:.4g}" + (f" ({mode})" if mode else "") + f": {flagged} above",
            )  # fmt: skip
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(f"{metric} score" + (" (log scale)" if log else ""))
        ax.set_ylabel("images")
        heading = title or f"{metric} scores of {len(values)} images"
        ax.set_title(heading + (f", AUROC {auroc:.3f}" if both else ""))
        ax.legend()


def _operating_point(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """Caught anomalies, false alarms and flagged images at `score > threshold` (the rule `ae score` applies)."""
    flagged = scores > threshold
    return int((flagged & labels).sum()), int((flagged & ~labels).sum()), int(flagged.sum())


@leader_writes
def roc_plot(
    scores: np.ndarray, labels: np.ndarray, path: Path, threshold: float | None = None, metric: str = "anomaly"
) -> None:
    """The ROC curve (anomalies caught against normal images flagged, over every threshold), its
    AUROC in the title, and where the threshold in use sits on it."""
    from aecli.scoring import metrics

    values, truth = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels).astype(bool).ravel()
    fpr, tpr = metrics.roc_points(values, truth)
    with _figure(path) as figure:
        ax = figure.add_subplot()
        ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="chance")
        ax.plot(fpr, tpr, color="C0", linewidth=2, label=f"{metric} ({truth.sum()} anomalous, {(~truth).sum()} normal)")
        if threshold is not None and np.isfinite(threshold):
            caught, false_alarms, _ = _operating_point(values, truth, threshold)
            x, y = false_alarms / (~truth).sum(), caught / truth.sum()
            ax.scatter(
                [x], [y], s=80, color="black", zorder=3, label=f"threshold {threshold:.4g}: FPR {x:.3f}, TPR {y:.3f}"
            )
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false-positive rate (normal images flagged)")
        ax.set_ylabel("true-positive rate (anomalies flagged)")
        ax.set_title(f"ROC of {metric} scores, AUROC {metrics.auroc(values, truth):.3f}")
        ax.legend(loc="lower right")


@leader_writes
def precision_recall_plot(
    scores: np.ndarray, labels: np.ndarray, path: Path, threshold: float | None = None, metric: str = "anomaly"
) -> None:
    """Precision against recall over every threshold, as steps (their area is the average precision in
    the title), the share of anomalies (what flagging at random gives), and the threshold in use."""
    from aecli.scoring import metrics

    values, truth = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels).astype(bool).ravel()
    recall, precision = metrics.pr_points(values, truth)
    with _figure(path) as figure:
        ax = figure.add_subplot()
        share = truth.mean()
        ax.axhline(share, color="0.6", linestyle=":", linewidth=1, label=f"share of anomalies ({share:.3f})")
        ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre", color="C0", linewidth=2, label=metric)
        if threshold is not None and np.isfinite(threshold):
            caught, _, flagged = _operating_point(values, truth, threshold)
            if flagged:
                x, y = caught / truth.sum(), caught / flagged
                ax.scatter(
                    [x], [y], s=80, color="black", zorder=3,
                    label=f"threshold {threshold:.4g}: recall {x:.3f}, precision {y:.3f}",
                )  # fmt: skip
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.05)
        ax.set_xlabel("recall (anomalies flagged)")
        ax.set_ylabel("precision (flagged images that are anomalies)")
        ax.set_title(f"Precision-recall of {metric} scores, AP {metrics.average_precision(values, truth):.3f}")
        ax.legend(loc="lower left")

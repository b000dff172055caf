"""How well scores separate labelled normal (0) from anomalous (1) images: AUROC, AP and F1.

Written here rather than borrowed so the tool stays small; checked in tests against cases
computed by hand. Ties are handled as the definitions require: AUROC counts a tied pair as
half right, and precision-recall points are taken only between distinct scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aecli.errors import UsageError


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if scores.shape != labels.shape:
        raise ValueError("scores and labels differ in length")
    if labels.all() or not labels.any():
        raise UsageError("evaluation needs both normal and anomalous images among the labels")
    return scores, labels


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a random anomaly > score of a random normal image), ties counting one half."""
    scores, labels = _check(scores, labels)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):  # average ranks over runs of tied scores
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds (distinct scores, high to low) and the true and false positives at `score >= t`."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return s[last], tp, fp


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Sum over thresholds of (recall step) x precision: the area under the precision-recall steps."""
    scores, labels = _check(scores, labels)
    _, tp, fp = _curve(scores, labels)
    precision, recall = tp / (tp + fp), tp / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1): the ROC curve."""
    scores, labels = _check(scores, labels)
    _, tp, fp = _curve(scores, labels)
    return np.r_[0.0, fp / (~labels).sum()], np.r_[0.0, tp / labels.sum()]


def pr_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at every distinct threshold, high to low: the steps average_precision sums."""
    scores, labels = _check(scores, labels)
    _, tp, fp = _curve(scores, labels)
    return tp / labels.sum(), tp / (tp + fp)


def confusion(flagged: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Counts of flagged against labelled: caught anomalies, false alarms, missed anomalies, passed normals."""
    flagged, labels = np.asarray(flagged).astype(bool), np.asarray(labels).astype(bool)
    return {
        "true_positives": int((flagged & labels).sum()),
        "false_positives": int((flagged & ~labels).sum()),
        "false_negatives": int((~flagged & labels).sum()),
        "true_negatives": int((~flagged & ~labels).sum()),
    }


def f1_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """F1 of flagging `score > threshold` (the rule `ae score` applies)."""
    scores, labels = _check(scores, labels)
    flagged = scores > threshold
    tp = np.sum(flagged & labels)
    return float(2 * tp / (flagged.sum() + labels.sum())) if tp else 0.0


def best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The highest F1 over all thresholds, and the threshold that gives it (flag `score > t`)."""
    scores, labels = _check(scores, labels)
    thresholds, tp, fp = _curve(scores, labels)
    f1 = 2 * tp / (tp + fp + labels.sum())
    k = int(np.argmax(f1))
    below = thresholds[k + 1] if k + 1 < len(thresholds) else thresholds[k] - 1.0
    return float(f1[k]), float((thresholds[k] + below) / 2)  # midway to the next lower score


@dataclass
class Evaluation:
    auroc: float
    average_precision: float
    f1: float  # at the threshold used
    best_f1: float
    best_threshold: float
    normal: int
    anomalous: int
    normal_flagged: float  # the share of the normal images above the threshold used: its false-positive rate


def evaluate(scores: np.ndarray, labels: np.ndarray, threshold: float) -> Evaluation:
    scores, labels = _check(scores, labels)
    top, at = best_f1(scores, labels)
    normal = scores[~labels]
    return Evaluation(
        auroc(scores, labels), average_precision(scores, labels), f1_at(scores, labels, threshold),
        top, at, len(normal), int(labels.sum()), float((normal > threshold).mean()) if len(normal) else 0.0,
    )  # fmt: skip

"""`ae score` gives each image the same score and verdict however the set is fed: batch size, loader
workers, input order, or the set scored whole or in two halves (property tests with hypothesis)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import blobs, write_pngs

# How close two runs' scores must be. Scores are printed with 7 significant digits, and the forward
# pass rounds float32 a little differently at different batch sizes (latents differ by ~3 ulp).
# mse and ssim carry that rounding through unchanged. combined adds the latent distance, a squared
# Mahalanobis distance whose precision matrix is ill-conditioned (ridge 1e-3: eigenvalues from ~2 to
# ~6e4 in the test models), so ~3 ulp in the latent become ~5e-5 of the distance, as far from a float64
# forward pass at a single batch size; divided by the latent's MAD, that noise is relative to |combined|
# plus an offset of a few. Measured over every batch size 1..32: under a tenth of these, for each model.
TOLERANCE = {
    "combined": {"rel": 1e-4, "abs": 1e-3},
    "mse": {"rel": 1e-5, "abs": 0.0},
    "ssim": {"rel": 1e-5, "abs": 0.0},
}

PROPERTY = settings(max_examples=8, deadline=None)


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> list[Path]:
    """20 discs like the training data and 4 noise images: some verdicts of each kind for every metric."""
    normal = blobs(20, seed=5)
    noise = (np.random.default_rng(7).random((4, 16, 16)) * 255).astype(np.uint8)
    return write_pngs(tmp_path_factory.mktemp("invariance"), np.concatenate([normal, noise]))


def _score(run, model: Path, paths: list[Path], metric: str, *flags) -> dict[str, tuple[float, float, str]]:
    """path -> (score, threshold, anomalous) from `ae score --format csv`, checking rows come in input order."""
    result = run("score", *paths, "-m", model, "--metric", metric, "--format", "csv", "-q", *flags)
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    return {r["path"]: (float(r["score"]), float(r["threshold"]), r["anomalous"]) for r in rows}


def _assert_same(scored: dict, reference: dict, metric: str, setting: str) -> None:
    assert scored.keys() == reference.keys(), setting
    for path, (score, threshold, anomalous) in reference.items():
        assert scored[path][0] == pytest.approx(score, **TOLERANCE[metric]), f"{metric} of {path} with {setting}"
        assert scored[path][1] == threshold, f"{metric} threshold with {setting}"
        assert scored[path][2] == anomalous, f"{metric} verdict on {path} with {setting}"


@pytest.mark.parametrize("metric", list(TOLERANCE))
@pytest.mark.parametrize("variant", ["ae", "vae", "dae"])  # dae: the unet, the one with batch norm
def test_scores_and_verdicts_do_not_depend_on_how_the_set_is_fed(run, models, image_set, variant, metric):
    model = models[variant]
    reference = _score(run, model, sorted(image_set), metric)  # default batch size, sorted inputs
    scores = np.array([s for s, _, _ in reference.values()])
    threshold = next(iter(reference.values()))[1]
    verdicts = [a for _, _, a in reference.values()]
    assert "true" in verdicts and "false" in verdicts, f"{variant} {metric}: every verdict alike proves little"
    # no score so near the threshold that the tolerance allowed could flip its verdict
    tol = TOLERANCE[metric]
    assert (np.abs(scores - threshold) > tol["abs"] + tol["rel"] * np.abs(scores)).all()

    @PROPERTY
    @given(
        batch_size=st.integers(1, 32),
        workers=st.integers(0, 2),
        order=st.permutations(image_set),
        split=st.integers(1, len(image_set) - 1),
    )
    @example(batch_size=1, workers=2, order=image_set[::-1], split=1)
    @example(batch_size=32, workers=0, order=image_set, split=len(image_set) - 1)
    def check(batch_size, workers, order, split):
        flags = ("--batch-size", batch_size, "--workers", workers, "--threshold", "auto")
        setting = f"batch size {batch_size}, {workers} workers, split at {split}"
        whole = _score(run, model, order, metric, *flags)
        _assert_same(whole, reference, metric, f"{setting}, whole")
        first, second = order[:split], order[split:]
        halves = {**_score(run, model, first, metric, *flags), **_score(run, model, second, metric, *flags)}
        _assert_same(halves, reference, metric, f"{setting}, in halves")
        for path in whole:  # the halves agree with the whole run, not only each with the reference
            assert halves[path][2] == whole[path][2], f"{metric} verdict on {path} with {setting}"

    check()

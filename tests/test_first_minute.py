"""What a new user meets in the first minute: a model that learnt nothing, and a metric that cannot
work on their images, are said out loud instead of scoring at chance in silence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aecli.io.modelfile import learning_caveat
from tests.conftest import blobs

LEARNT_LITTLE = "the model has learnt little"


def test_a_model_that_learnt_little_says_so_after_training_and_in_info(run, tmp_path):
    np.save(tmp_path / "x.npy", blobs(32))
    result = run("train", "x.npy", "--epochs", "1", "--batch-size", "8", "-o", "m.safetensors")
    assert result.exit_code == 0
    assert result.stderr.count(LEARNT_LITTLE) == 1 and "--epochs" in result.stderr
    info = run("info", "m.safetensors")
    assert info.exit_code == 0 and LEARNT_LITTLE in info.stderr and "learnt" in info.stdout
    details = json.loads(run("info", "m.safetensors", "--json").stdout)
    assert details["calibration"]["pixel_variance"] > 0 and LEARNT_LITTLE in details["caveats"][0]
    assert LEARNT_LITTLE not in run("train", "x.npy", "--epochs", "1", "-q", "-o", "q.safetensors").stderr


@pytest.mark.parametrize(
    "mse, variance, warned",
    [(0.01, 0.08, False), (0.039, 0.08, False), (0.041, 0.08, True), (0.12, 0.08, True)],
)
def test_the_warning_needs_the_held_out_error_near_the_images_own_variance(mse, variance, warned):
    calibration = {"metrics": {"mse": {"mean": mse}}, "pixel_variance": variance}
    assert (learning_caveat(calibration) is not None) == warned


def test_files_without_the_measurement_say_nothing():
    """Older files and patch models (whose held-out images are not model-sized) have no variance."""
    assert learning_caveat({"metrics": {"mse": {"mean": 1.0}}}) is None
    assert learning_caveat(None) is None
    assert learning_caveat({"metrics": [], "pixel_variance": "x"}) is None


def test_bce_on_grey_images_warns_once_and_on_black_and_white_ones_not(run, models, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "grey.npy", np.clip(0.5 + 0.15 * rng.standard_normal((12, 16, 16)), 0, 1).astype(np.float32))
    np.save(tmp_path / "binary.npy", ((blobs(12) > 100) * 255).astype(np.uint8))
    grey = run("score", "grey.npy", "-m", models["ae"], "--metric", "bce", "-o", "s.csv")
    assert grey.exit_code == 0 and grey.stderr.count("--metric bce suits near-binary images") == 1
    binary = run("score", "binary.npy", "-m", models["ae"], "--metric", "bce", "-o", "s.csv")
    assert binary.exit_code == 0 and "near-binary" not in binary.stderr
    other = run("score", "grey.npy", "-m", models["ae"], "--metric", "mse", "-o", "s.csv")
    assert other.exit_code == 0 and "near-binary" not in other.stderr

"""`--variant geometric` through the real CLI: it trains, `ae score` uses its own metric, and an
image in another orientation than the normal ones scores above them, the same every time."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aecli.io import modelfile


def _pointing_up(n: int, seed: int, size: int = 16) -> np.ndarray:
    """n uint8 images of a bright disc with a dimmer tail below it: they have an up and a down."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cx, cy, r = rng.uniform(0.4 * size, 0.6 * size), rng.uniform(0.25 * size, 0.35 * size), rng.uniform(2.5, 3.5)
        disc = np.clip(1.5 - np.hypot(yy - cy, xx - cx) / r, 0, 1)
        tail = ((np.abs(xx - cx) < 1.5) & (yy > cy) & (yy < cy + 0.5 * size)) * 0.6
        out[i] = (np.maximum(disc, tail) * rng.uniform(0.7, 1) * 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def geometric(tmp_path_factory):
    """A geometric model trained on 96 upright images, and a test set: 8 upright, 2 upside down."""
    from typer.testing import CliRunner

    from aecli.cli import app

    root = tmp_path_factory.mktemp("geometric")
    np.save(root / "train.npy", _pointing_up(96, seed=0))
    test = _pointing_up(10, seed=1)
    test[8:] = test[8:, ::-1]  # the odd ones: upside down
    np.save(root / "test.npy", test)
    model = root / "geo.safetensors"
    args = ["train", root / "train.npy", "--variant", "geometric", "--epochs", "8", "--batch-size", "16", "-o", model]
    result = CliRunner().invoke(app, [str(a) for a in [*args, "-q"]], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return model, root / "test.npy"


def test_geometric_scores_with_its_own_metric_by_default(run, geometric):
    model, test = geometric
    result = run("score", test, "-m", model, "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert "geometric" in result.stderr
    scores = [json.loads(line)["score"] for line in result.stdout.splitlines()]
    assert min(scores[8:]) > max(scores[:8]), scores
    calibration = modelfile.load(model).calibration["metrics"]
    assert {"transforms", "geometric", "combined"} <= set(calibration)


def test_the_transforms_metric_alone_tells_up_from_down_and_is_deterministic(run, geometric):
    model, test = geometric
    runs = [run("score", test, "-m", model, "--metric", "transforms", "--format", "jsonl") for _ in range(2)]
    assert all(r.exit_code == 0 for r in runs), runs[0].stderr
    first, second = ([json.loads(line)["score"] for line in r.stdout.splitlines()] for r in runs)
    assert first == second
    assert min(first[8:]) > max(first[:8]), first


def test_its_metrics_need_a_geometric_model(run, models, mvtec):
    result = run("score", mvtec, "-m", models["ae"], "--metric", "transforms")
    assert result.exit_code == 2  # a usage error, as an unknown metric is
    assert "--variant geometric" in result.stderr

"""Images of another shape than the model's square: pad, crop or stretch, chosen once at training,
stored in the model file and applied alike by every command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aecli.data.images import to_size
from tests.conftest import blobs

FAST = ["--epochs", "1", "--batch-size", "8", "-q"]


def wide(n: int, seed: int = 0) -> np.ndarray:
    """n float images, 16 high and 32 wide: two discs side by side, each different."""
    return (np.concatenate([blobs(n, seed=seed), blobs(n, seed=seed + 1)], axis=2) / 255).astype(np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 16x16 model per mode, trained on 16x32 images."""
    from typer.testing import CliRunner

    from aecli.cli import app

    root = tmp_path_factory.mktemp("resize")
    np.save(root / "wide.npy", wide(24))
    models = {}
    for mode in ("pad", "crop", "stretch"):
        models[mode] = root / f"{mode}.safetensors"
        args = ["train", str(root / "wide.npy"), "--image-size", "16", "--resize", mode, "-o", str(models[mode])]
        result = CliRunner().invoke(app, [*args, *FAST], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
    return models


def test_the_mode_is_stored_in_the_model_file_and_pad_is_the_default(run, trained, tmp_path):
    for mode, path in trained.items():
        assert json.loads(run("info", path, "--json").stdout)["model_config"]["resize"] == mode
    shown = run("train", "--print-config").stdout
    assert "resize: pad" in shown


@pytest.mark.parametrize("mode", ["pad", "crop", "stretch"])
def test_encode_and_score_fit_images_as_the_model_was_trained(run, trained, tmp_path, mode):
    """An image of another shape gives what its fitted square gives: the stored mode is applied."""
    images = wide(3, seed=7)
    squares = to_size(torch.from_numpy(images)[:, None], 16, mode)[:, 0].numpy()
    if mode == "crop":  # the shorter side is the model's already: the centre, not resampled
        np.testing.assert_array_equal(squares, images[:, :, 8:24])
    np.save(tmp_path / "wide.npy", images)
    np.save(tmp_path / "square.npy", squares)
    for name in ("wide", "square"):
        assert run("encode", f"{name}.npy", "-m", trained[mode], "-o", f"z-{name}.npy", "-q").exit_code == 0
        assert run("score", f"{name}.npy", "-m", trained[mode], "-o", f"s-{name}.csv", "-q").exit_code == 0
    np.testing.assert_allclose(np.load(tmp_path / "z-wide.npy"), np.load(tmp_path / "z-square.npy"), atol=1e-5)
    wide_scores, square_scores = ((tmp_path / f"s-{n}.csv").read_text().splitlines() for n in ("wide", "square"))
    for a, b in zip(wide_scores[1:], square_scores[1:]):
        assert float(a.split(",")[1]) == pytest.approx(float(b.split(",")[1]), rel=1e-4)


def test_the_modes_differ_where_they_should():
    """pad keeps the whole image at its proportions, crop its centre, stretch everything squashed."""
    x = torch.zeros(1, 16, 32)
    x[..., :4] = 1  # a bright band at the left edge, where a defect would be
    pad, crop, stretch = (to_size(x, 16, m) for m in ("pad", "crop", "stretch"))
    assert pad[0, 4:12, 0].min() > 0.9 and pad[0, 4:12, 3].max() < 0.1  # kept, half as wide, centred
    assert torch.equal(pad[0, 0], pad[0, 4])  # the padding repeats the edge rows
    assert crop.max() == 0  # the band lay outside the centre
    assert stretch[0, :, 0].min() > 0.9 and stretch[0, :, 3].max() < 0.1  # kept, squashed to half its width


def test_exact_size_refuses_other_sizes(run, trained, tmp_path):
    np.save(tmp_path / "wide.npy", wide(2))
    result = run("encode", "wide.npy", "-m", trained["pad"], "-o", "z.npy", "--exact-size")
    assert result.exit_code == 1 and "the model takes 16x16" in result.stderr and "--exact-size" in result.stderr

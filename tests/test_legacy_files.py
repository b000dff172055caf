"""Model files written before the model contract (format version 1) load and give the same results.

The fixtures in tests/fixtures/v1 were made by tests/fixtures/v1/make.py with the aecli of that
time; every command that reads a model runs here on the same inputs and must agree with what
that aecli wrote then.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import blobs

V1 = Path(__file__).parent / "fixtures" / "v1"
NAMES = ["ae-conv", "dae-unet", "vae-rgb", "dae-patches"]


def _pngs(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))])


@pytest.mark.parametrize("name", NAMES)
def test_a_version_1_file_gives_the_same_latents_scores_and_pictures(run, tmp_path, name):
    model, inputs = V1 / f"{name}.safetensors", V1 / f"{name}.inputs.npy"
    expected = np.load(V1 / f"{name}.expected.npz")

    cpu = ["--device", "cpu", "-q"]  # as they were made: no bf16 autocast
    assert run("encode", inputs, "-m", model, "-o", "z.npy", *cpu).exit_code == 0
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), expected["latents"], rtol=1e-5, atol=1e-6)
    for key in (k for k in expected.files if k.startswith("score.")):
        metric = key[len("score.") :]  # --whole: as version 1 scored patch models (now they score in tiles)
        result = run("score", inputs, "-m", model, "--metric", metric, "--format", "csv", "--whole", *cpu)
        scores = [float(line.split(",")[1]) for line in result.stdout.splitlines()[1:]]
        np.testing.assert_allclose(scores, expected[key], rtol=1e-5, atol=1e-7, err_msg=key)
    if "decoded" in expected.files:
        assert run("decode", "z.npy", "-m", model, "-o", "decoded", *cpu).exit_code == 0
        np.testing.assert_array_equal(_pngs(tmp_path / "decoded"), expected["decoded"])
        assert run("sample", "-m", model, "-n", 4, "--seed", 3, "-o", "samples", *cpu).exit_code == 0
        np.testing.assert_array_equal(_pngs(tmp_path / "samples"), expected["samples"])
    assert run("denoise", inputs, "-m", model, "--add-noise", 0.1, "-o", "den", *cpu).exit_code == 0
    np.testing.assert_array_equal(_pngs(tmp_path / "den"), expected["denoised"])


def test_an_interrupted_version_1_run_resumes_to_the_end(run, tmp_path):
    shutil.copy(V1 / "ae-interrupted.safetensors", tmp_path / "m.safetensors")
    np.save(tmp_path / "train.npy", blobs(24, 16, 1, seed=1))
    result = run("train", "train.npy", "-o", "m.safetensors", "--resume", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    training = json.loads(run("info", "m.safetensors", "--json").stdout)["training"]
    assert training["complete"] and training["epochs"] == 3

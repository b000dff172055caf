"""`ae sample` through the real CLI: a VAE's prior, a plain model's fitted Gaussian, interpolation."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from tests.conftest import blobs, write_pngs


def test_a_vae_samples_the_same_images_for_the_same_seed(run, models, tmp_path):
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        result = run("sample", "-m", models["vae"], "-n", "5", "-o", name, "--seed", seed)
        assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir("a")) == [f"{i:06d}.png" for i in range(5)]
    read = lambda d: [(tmp_path / d / f"{i:06d}.png").read_bytes() for i in range(5)]  # noqa: E731
    assert read("a") == read("b") != read("c")
    assert "prior" in result.stderr


def test_temperature_zero_gives_the_mean_image_every_time(run, models, tmp_path):
    assert run("sample", "-m", models["vae"], "-n", "3", "-o", "t0", "--temperature", "0", "-q").exit_code == 0
    images = [np.asarray(Image.open(tmp_path / "t0" / f"{i:06d}.png")) for i in range(3)]
    assert (images[0] == images[1]).all() and (images[1] == images[2]).all()


def test_a_plain_model_samples_from_its_fitted_latent_gaussian_and_says_so(run, models, tmp_path):
    result = run("sample", "-m", models["ae"], "-n", "16", "--grid", "g.png", "--nrow", "4")
    assert result.exit_code == 0, result.stderr
    assert "Gaussian fitted to" in result.stderr
    assert Image.open(tmp_path / "g.png").size == (4 * 18 + 2, 4 * 18 + 2)


def test_interpolation_decodes_a_straight_line_between_two_images(run, models, tmp_path):
    pair = blobs(2, seed=5)
    Image.fromarray(pair[0]).save(tmp_path / "a.png")
    Image.fromarray(pair[1]).save(tmp_path / "b.png")
    result = run("sample", "-m", models["ae"], "--interpolate", "a.png", "b.png", "--steps", "6", "-o", "walk", "--grid", "w.png")
    assert result.exit_code == 0, result.stderr
    frames = [np.asarray(Image.open(tmp_path / "walk" / f"{i:06d}.png"), np.float32) for i in range(6)]
    assert len(os.listdir(tmp_path / "walk")) == 6
    # the ends differ, and each step moves away from the first image
    distances = [np.abs(f - frames[0]).mean() for f in frames]
    assert distances[-1] > 0 and distances == sorted(distances)


def test_sampling_errors_are_one_line(run, models):
    result = run("sample", "-m", models["dae"], "--grid", "g.png")
    assert result.exit_code == 2 and "--arch conv" in result.stderr and result.stderr.count("\n") == 1
    result = run("sample", "-m", models["vae"])
    assert result.exit_code == 2 and "nothing to write" in result.stderr
    result = run("sample", "-m", "missing.safetensors", "--grid", "g.png")
    assert result.exit_code == 1 and "no such model file" in result.stderr
    assert not os.path.exists("g.png")


@pytest.mark.parametrize(
    "ends, extra, says",
    [
        (["many", "a.png"], [], "many holds 3 images"),
        (["a.png", "a.png"], ["-n", "4", "--sampler", "gmm"], "-n, --sampler only set what is drawn"),
    ],
)
def test_interpolation_takes_one_image_at_each_end_and_no_sampling_options(run, models, tmp_path, ends, extra, says):
    write_pngs(tmp_path / "many", blobs(3, seed=1))
    Image.fromarray(blobs(1, seed=2)[0]).save(tmp_path / "a.png")
    result = run("sample", "-m", models["ae"], "--interpolate", *ends, *extra, "--grid", "w.png")
    assert result.exit_code == 2 and says in result.stderr, result.stderr
    assert not (tmp_path / "w.png").exists()

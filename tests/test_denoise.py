"""`ae denoise` through the real CLI: mirrored outputs, tiles for any size, references, safety."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from aecli.scoring.quality import psnr, ssim
from aecli.infer.tiles import apply_tiled
from tests.conftest import blobs, write_pngs


@pytest.fixture
def tree(tmp_path):
    """pngs/a/*.png and pngs/b/*.png: a folder with subfolders, as users have."""
    write_pngs(tmp_path / "pngs" / "a", blobs(3, seed=1))
    write_pngs(tmp_path / "pngs" / "b", blobs(2, seed=2))
    return tmp_path / "pngs"


def test_denoise_mirrors_relative_paths_as_png(run, models, tree, tmp_path):
    (tree / "b" / "img000.png").rename(tree / "b" / "photo.jpg.png")  # odd names keep their stem
    result = run("denoise", tree, "-m", models["dae"], "-o", "clean")
    assert result.exit_code == 0, result.stderr
    written = sorted(str(p.relative_to(tmp_path / "clean")) for p in (tmp_path / "clean").rglob("*.png"))
    assert written == ["a/img000.png", "a/img001.png", "a/img002.png", "b/img001.png", "b/photo.jpg.png"]
    assert Image.open(tmp_path / "clean" / "a" / "img000.png").mode == "L"
    assert result.stdout == ""


@pytest.mark.parametrize("pattern", ["pngs/**/*.png", "pngs/*"])
def test_a_glob_mirrors_paths_below_its_fixed_part(run, models, tree, tmp_path, pattern):
    """a/img000.png and b/img000.png were both written to clean/img000.png, so the run stopped."""
    result = run("denoise", pattern, "-m", models["dae"], "-o", "clean", "-q")
    assert result.exit_code == 0, result.stderr
    written = sorted(str(p.relative_to(tmp_path / "clean")) for p in (tmp_path / "clean").rglob("*.png"))
    assert written == ["a/img000.png", "a/img001.png", "a/img002.png", "b/img000.png", "b/img001.png"]
    result = run("denoise", tree / "a" / "img000.png", tree / "b" / "img000.png", "-m", models["dae"], "-o", "flat")
    assert result.exit_code == 1 and f"inputs {tree / 'a' / 'img000.png'} and {tree / 'b' / 'img000.png'}" in result.stderr


def test_denoise_refuses_to_write_into_an_input_directory(run, models, tree):
    before = {p: p.read_bytes() for p in tree.rglob("*.png")}
    for out in (tree, tree / "a" / "out"):
        result = run("denoise", tree, "-m", models["dae"], "-o", out)
        assert result.exit_code == 1 and "--overwrite" in result.stderr
    assert {p: p.read_bytes() for p in tree.rglob("*.png")} == before  # inputs untouched
    result = run("denoise", tree / "a" / "img000.png", "-m", models["dae"], "-o", tree / "a")
    assert result.exit_code == 1 and "refusing to overwrite input" in result.stderr
    assert (
        run("denoise", tree / "a" / "img000.png", "-m", models["dae"], "-o", tree / "a", "--overwrite", "-q").exit_code
        == 0
    )


def test_any_size_is_denoised_by_tiles_and_keeps_its_size(run, models, tmp_path):
    big = np.kron(blobs(1, size=40, seed=3)[0], np.ones((1, 1), np.uint8))[:40, :37]
    Image.fromarray(big).save(tmp_path / "big.png")
    rgb = np.stack([big, big[::-1], big[:, ::-1]], -1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    result = run("denoise", "big.png", "rgb.png", "-m", models["dae"], "-o", "out", "--grid", "g.png")
    assert result.exit_code == 0, result.stderr
    assert Image.open(tmp_path / "out" / "big.png").size == (37, 40)
    colour = Image.open(tmp_path / "out" / "rgb.png")
    assert colour.size == (37, 40) and colour.mode == "RGB"  # channel by channel through a grey model
    assert (tmp_path / "g.png").is_file()
    assert run("denoise", "big.png", "-m", models["dae"], "-o", "small", "--whole", "-q").exit_code == 0
    assert Image.open(tmp_path / "small" / "big.png").size == (
        15,
        16,
    )  # fitted by padding, the padding cut away: the aspect kept


def test_reference_prints_psnr_and_ssim_and_writes_a_report(run, models, tree, tmp_path):
    result = run(
        "denoise", tree, "-m", models["dae"], "--add-noise", "0.2", "--reference", tree,
        "--report", "r.csv", "--save-noisy", "noisy", "-o", "out",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "PSNR" in result.stdout and "denoised" in result.stdout
    lines = open(tmp_path / "r.csv").read().splitlines()
    assert lines[0] == "path,psnr_before,psnr_after,ssim_before,ssim_after" and len(lines) == 6
    before = [float(line.split(",")[1]) for line in lines[1:]]
    assert all(12 < p < 20 for p in before)  # Gaussian noise of std 0.2 on dark images: about 15 dB
    noisy = np.asarray(Image.open(tmp_path / "noisy" / "a" / "img000.png"), np.float32) / 255
    clean = np.asarray(Image.open(tree / "a" / "img000.png"), np.float32) / 255
    assert abs(10 * np.log10(1 / np.mean((noisy - clean) ** 2)) - before[0]) < 0.2


def test_noise_is_the_same_for_the_same_seed(run, models, tree, tmp_path):
    for name, seed in (("n1", "0"), ("n2", "0"), ("n3", "1")):
        assert (
            run(
                "denoise",
                tree,
                "-m",
                models["dae"],
                "--add-noise",
                "0.1",
                "--save-noisy",
                name,
                "--seed",
                seed,
                "-o",
                f"o{name}",
                "-q",
            ).exit_code
            == 0
        )
    read = lambda d: (tmp_path / d / "a" / "img001.png").read_bytes()  # noqa: E731
    assert read("n1") == read("n2") != read("n3")


def test_references_can_be_a_dataset_matched_by_position(run, models, npy_file):
    result = run(
        "denoise",
        npy_file,
        "-m",
        models["dae"],
        "--add-noise",
        "0.1",
        "--reference",
        npy_file,
        "--report",
        "r.csv",
        "-q",
    )
    assert result.exit_code == 0, result.stderr
    assert len(open("r.csv").read().splitlines()) == 25


def test_reference_errors(run, models, tree, tmp_path):
    os.makedirs(tmp_path / "refs")
    result = run("denoise", tree, "-m", models["dae"], "--reference", tmp_path / "refs", "-o", "out")
    assert result.exit_code == 1 and "no reference for" in result.stderr and result.stderr.count("\n") == 1
    result = run("denoise", tree, "-m", models["dae"], "--report", "r.csv", "-o", "out")
    assert result.exit_code == 2 and "--report needs --reference" in result.stderr
    result = run("denoise", tree, "-m", models["dae"], "--noise", "salt-pepper", "--reference", tree, "-o", "out")
    assert result.exit_code == 2 and "--noise salt-pepper needs --add-noise" in result.stderr  # it added nothing


def test_a_model_not_trained_to_denoise_says_so(run, models, npy_file):
    result = run("denoise", npy_file, "-m", models["ae"], "-o", "out")
    assert result.exit_code == 0 and "not trained to denoise" in result.stderr


def test_denoising_with_a_model_that_cannot_take_the_image(run, models, tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG broken")
    result = run("denoise", "x.png", "-m", models["dae"], "-o", "out")
    assert result.exit_code == 1 and "x.png" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_denoiser_trained_on_patches_cleans_whole_images(run, tmp_path):
    write_pngs(tmp_path / "photos", blobs(6, size=32))
    result = run(
        "train",
        "photos",
        "--variant",
        "denoising",
        "--patch-size",
        "8",
        "--patches-per-image",
        "4",
        "--epochs",
        "1",
        "-o",
        "p.safetensors",
        "-q",
    )
    assert result.exit_code == 0, result.stderr
    from aecli.io import modelfile

    loaded = modelfile.load(tmp_path / "p.safetensors")
    assert loaded.config.image_size == 8 and loaded.training["data"]["train"] % 4 == 0
    assert run("denoise", "photos/img000.png", "-m", "p.safetensors", "-o", "out", "-q").exit_code == 0
    assert Image.open(tmp_path / "out" / "img000.png").size == (32, 32)


@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 37, 50), (1, 5, 9), (2, 64, 17)])
def test_tiles_blend_without_seams(shape):
    """Where every tile agrees (a pixel-wise function), blending reproduces it exactly."""
    image = torch.rand(shape)
    out = apply_tiled(lambda x: x * 0.5 + 0.25, image, tile=16, overlap=0.5, batch_size=3)
    torch.testing.assert_close(out, image * 0.5 + 0.25)


def test_psnr_and_ssim_against_hand_computed_values():
    a = torch.full((1, 1, 16, 16), 0.5)
    b = torch.full((1, 1, 16, 16), 0.6)
    assert psnr(b, a).item() == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)  # constant images: only the luminance term
    assert ssim(b, a).item() == pytest.approx(expected, rel=1e-5)
    noise = torch.rand(1, 3, 20, 20)
    assert ssim(noise, noise).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(noise, 1 - noise).item() < 0

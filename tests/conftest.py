"""Tiny data made on the fly, and a runner that calls the real CLI in-process."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

# Tiny models gain nothing from a second thread, and on a busy machine two OpenMP threads stall
# each other; set before torch starts, so subprocesses of the tests inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from aecli.cli import app  # noqa: E402


def blobs(n: int, size: int = 16, channels: int = 1, seed: int = 0) -> np.ndarray:
    """n uint8 images (N, H, W[, C]) of soft bright discs on black: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size, channels), np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(size * 0.3, size * 0.7, 2).tolist() + [rng.uniform(size * 0.15, size * 0.3)]
        disc = np.clip(1.5 - np.hypot(yy - cy, xx - cx) / r, 0, 1)
        colour = rng.uniform(0.5, 1, channels)
        out[i] = (disc[..., None] * colour * 255).astype(np.uint8)
    return out[..., 0] if channels == 1 else out


def write_pngs(folder: Path, images: np.ndarray, prefix: str = "img") -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{prefix}{i:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def write_idx(path: Path, images: np.ndarray) -> Path:
    header = struct.pack(">BBBB", 0, 0, 0x08, images.ndim) + struct.pack(f">{images.ndim}I", *images.shape)
    data = header + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture
def run(monkeypatch, tmp_path):
    """Invoke `ae ARGS...` in tmp_path; returns the click Result (exit_code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory):
    """The tests' own $AE_CACHE_DIR: decoded datasets never land in (or evict from) the user's cache."""
    previous = os.environ.get("AE_CACHE_DIR")
    os.environ["AE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ["AE_CACHE_DIR"])
    if previous is None:
        os.environ.pop("AE_CACHE_DIR", None)
    else:
        os.environ["AE_CACHE_DIR"] = previous


@pytest.fixture
def png_dir(tmp_path) -> Path:
    write_pngs(tmp_path / "pngs", blobs(24))
    return tmp_path / "pngs"


@pytest.fixture
def npy_file(tmp_path) -> Path:
    np.save(tmp_path / "blobs.npy", blobs(24))
    return tmp_path / "blobs.npy"


@pytest.fixture
def idx_file(tmp_path) -> Path:
    return write_idx(tmp_path / "blobs-idx3-ubyte.gz", blobs(24))


@pytest.fixture
def mvtec(tmp_path) -> Path:
    """test/good (discs like the training data) and test/noise (obvious anomalies), MVTec-style."""
    write_pngs(tmp_path / "test" / "good", blobs(6, seed=11))
    rng = np.random.default_rng(0)
    write_pngs(tmp_path / "test" / "noise", (rng.random((2, 16, 16)) * 255).astype(np.uint8))
    return tmp_path / "test"


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny trained models, made once per session: ae and vae (conv), dae (unet denoiser)."""
    root = tmp_path_factory.mktemp("models")
    np.save(root / "blobs.npy", blobs(48))
    runner = CliRunner()
    recipes = {
        "ae": ["--variant", "ae"],
        "vae": ["--variant", "vae"],
        "dae": ["--variant", "denoising", "--sigma", "0.1"],
    }
    paths = {}
    for name, flags in recipes.items():
        paths[name] = root / f"{name}.safetensors"
        args = [
            "train",
            str(root / "blobs.npy"),
            *flags,
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "-o",
            str(paths[name]),
            "-q",
        ]
        result = runner.invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
    return paths

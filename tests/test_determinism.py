"""The same command with the same --seed on CPU writes byte-identical files, model files included."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import blobs, write_pngs


def twice(run, tmp_path, make_args, outputs: list[str]) -> None:
    """Run the command in two fresh directories and compare every output byte for byte."""
    results = []
    for attempt in ("a", "b"):
        folder = tmp_path / attempt
        folder.mkdir(parents=True)
        result = run(*make_args(folder), "-q")
        assert result.exit_code == 0, result.stderr
        results.append({name: _bytes(folder / name) for name in outputs})
    assert results[0] == results[1]


def _bytes(path):
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return path.read_bytes()


TRAININGS = {
    "ae": ["--variant", "ae"],
    "vae": ["--variant", "vae"],
    "denoising (mixed noise)": ["--variant", "denoising", "--noise", "mixed"],
    "ae on patches": ["--variant", "ae", "--patch-size", "8", "--patches-per-image", "4"],
}


@pytest.mark.parametrize("recipe", list(TRAININGS))
def test_training_twice_gives_the_same_model_file(run, tmp_path, recipe):
    np.save(tmp_path / "x.npy", blobs(32))
    flags = [*TRAININGS[recipe], "--epochs", "2", "--batch-size", "8", "--seed", "3"]
    twice(run, tmp_path, lambda d: ["train", tmp_path / "x.npy", *flags, "-o", d / "m.safetensors"], ["m.safetensors"])


def test_a_new_process_trains_the_same_bytes_as_this_one(run, tmp_path):
    np.save(tmp_path / "x.npy", blobs(32))
    args = ["train", "x.npy", "--epochs", "2", "--batch-size", "8", "--variant", "vae", "-q"]
    subprocess.run([sys.executable, "-m", "aecli", *args, "-o", "there.safetensors"], cwd=tmp_path, check=True)
    assert run(*args, "-o", "here.safetensors").exit_code == 0
    assert (tmp_path / "here.safetensors").read_bytes() == (tmp_path / "there.safetensors").read_bytes()


def test_every_inference_command_repeats_itself_byte_for_byte(run, models, tmp_path):
    write_pngs(tmp_path / "pngs", blobs(12))
    pngs, ae, vae, dae = tmp_path / "pngs", models["ae"], models["vae"], models["dae"]
    np.save(tmp_path / "z.npy", np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32))
    commands = {
        "encode --sample": (lambda d: ["encode", pngs, "-m", vae, "--sample", "--seed", "4", "-o", d / "z.npz"], ["z.npz"]),
        "decode": (lambda d: ["decode", tmp_path / "z.npy", "-m", ae, "-o", d / "out", "--grid", d / "g.png"], ["out", "g.png"]),
        "denoise --add-noise": (
            lambda d: ["denoise", pngs, "-m", dae, "--add-noise", "0.2", "--save-noisy", d / "noisy", "-o", d / "out"],
            ["out", "noisy"],
        ),
        "sample": (lambda d: ["sample", "-m", vae, "-n", "8", "--seed", "5", "-o", d / "out", "--grid", d / "g.png"], ["out", "g.png"]),
        "score": (lambda d: ["score", pngs, "-m", ae, "--threshold", "p90", "-o", d / "s.csv", "--maps", d / "maps"], ["s.csv", "maps"]),
        "calibrate": (lambda d: ["calibrate", pngs, "-m", ae, "-o", d / "c.safetensors"], ["c.safetensors"]),
    }  # fmt: skip
    for name, (make_args, outputs) in commands.items():
        twice(run, tmp_path / name.split()[0], make_args, outputs)

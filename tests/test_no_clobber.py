"""No output replaces an input or another output, whatever option names it: each case here once
destroyed the user's file and exited 0. Refused before any work, in one line, input untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import blobs, write_pngs


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def inputs(tmp_path) -> Path:
    write_pngs(tmp_path / "photos", blobs(4, seed=3))
    Image.fromarray(blobs(1, seed=4)[0]).save(tmp_path / "one.png")
    (tmp_path / "list.txt").write_text("one.png\nphotos/img001.png\n")
    np.save(tmp_path / "stack.npy", blobs(4, seed=5))
    return tmp_path


CASES = {
    "score --maps into the input folder": (["score", "photos", "--maps", "photos", "--maps-all"], "photos/img000.png"),
    "score --maps onto a file named directly": (["score", "one.png", "--maps", "."], "one.png"),
    "score --maps inside the input folder": (["score", "photos", "--maps", "photos/maps"], "photos/img000.png"),
    "score -o": (["score", "one.png", "photos", "-o", "one.png"], "one.png"),
    "score --plot": (["score", "one.png", "photos", "--plot", "one.png"], "one.png"),
    "encode -o onto its array": (["encode", "stack.npy", "-o", "stack.npy"], "stack.npy"),
    "encode --index": (["encode", "one.png", "photos", "-o", "z.npy", "--index", "one.png"], "one.png"),
    "encode --plot": (["encode", "one.png", "photos", "-o", "z.npy", "--plot", "one.png"], "one.png"),
    "denoise --grid": (["denoise", "one.png", "-o", "out", "--grid", "one.png"], "one.png"),
    "denoise --report onto the reference": (
        ["denoise", "photos", "-o", "out", "--add-noise", "0.1", "--reference", "stack.npy", "--report", "stack.npy"],
        "stack.npy",
    ),
    "score -o onto its --files-from list": (["score", "--files-from", "list.txt", "-o", "list.txt"], "list.txt"),
    "score --plot, an image into the input folder": (
        ["score", "photos", "--plot", "photos/hist.png"],
        "photos/img000.png",
    ),
    "encode --plot, an image into the input folder": (
        ["encode", "photos", "-o", "z.npy", "--plot", "photos/map.png"],
        "photos/img000.png",
    ),
    "denoise -o into the reference folder": (
        ["denoise", "one.png", "-o", "photos", "--reference", "photos"],
        "photos/img000.png",
    ),
}


@pytest.mark.parametrize("args, victim", CASES.values(), ids=CASES.keys())
def test_an_output_onto_an_input_is_refused(run, models, inputs, args, victim):
    before = digest(inputs / victim)
    model = models["dae" if args[0] == "denoise" else "ae"]
    result = run(*args, "-m", model)
    assert result.exit_code == 1, result.stderr
    assert "refusing to" in result.stderr and "input" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert digest(inputs / victim) == before
    assert not (inputs / "out").exists() and not (inputs / "z.npy").exists()
    assert not (inputs / "photos" / "hist.png").exists() and not (inputs / "photos" / "map.png").exists()


def test_interpolating_into_the_folder_of_its_ends_is_refused(run, models, inputs):
    assert run("sample", "-m", models["ae"], "-n", "8", "-o", "drawn", "-q").exit_code == 0
    ends = [inputs / "drawn" / "000000.png", inputs / "drawn" / "000007.png"]
    before = [digest(p) for p in ends]
    result = run("sample", "-m", models["ae"], "--interpolate", *map(str, ends), "-o", "drawn")
    assert result.exit_code == 1 and "refusing to overwrite input" in result.stderr, result.stderr
    assert [digest(p) for p in ends] == before
    result = run("sample", "-m", models["ae"], "--interpolate", *map(str, ends), "--steps", "4", "-o", "walk", "-q")
    assert result.exit_code == 0 and len(list((inputs / "walk").iterdir())) == 4


@pytest.mark.parametrize(
    "args",
    [
        ["encode", "photos", "-o", "same.npy", "--index", "same.npy"],
        ["score", "photos", "-o", "s.csv", "--plot", "s.csv"],
        ["denoise", "photos", "-o", "out", "--save-noisy", "out", "--add-noise", "0.1"],
    ],
    ids=["encode -o and --index", "score -o and --plot", "denoise -o and --save-noisy"],
)
def test_two_outputs_on_one_path_are_refused(run, models, inputs, args):
    result = run(*args, "-m", models["dae" if args[0] == "denoise" else "ae"])
    assert result.exit_code == 1 and "would both write" in result.stderr, result.stderr
    assert not any((inputs / name).exists() for name in ("same.npy", "s.csv", "out"))


def test_overwrite_lets_denoise_replace_its_inputs(run, models, inputs):
    before = digest(inputs / "photos" / "img000.png")
    result = run("denoise", "photos", "-m", models["dae"], "-o", "photos", "--overwrite", "-q")
    assert result.exit_code == 0, result.stderr
    assert digest(inputs / "photos" / "img000.png") != before


def test_two_inputs_on_one_heatmap_are_refused_before_scoring(run, models, inputs, tmp_path):
    """Found only after scoring, once both were flagged: -o was written, the maps were not."""
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "img000.png").write_bytes((tmp_path / "photos" / "img000.png").read_bytes())
    result = run("score", "photos", "copy", "-m", models["ae"], "--maps", "maps", "-o", "s.csv")
    assert result.exit_code == 1 and "would both be written to maps/img000.png" in result.stderr, result.stderr
    assert not (tmp_path / "s.csv").exists()


def test_outputs_inside_the_report_or_a_hidden_folder(run, models, inputs, tmp_path):
    assert run("score", "photos", "-m", models["ae"], "--report", "rep", "-q").exit_code == 0
    result = run("score", "photos", "-m", models["ae"], "--report", "rep", "-o", "rep/scores.csv", "-q")
    assert result.exit_code == 1 and "inside --report rep" in result.stderr, result.stderr
    # a hidden folder is never walked, so maps may go below the inputs there
    result = run("score", "photos", "-m", models["ae"], "--maps", "photos/.maps", "--maps-all", "-o", "s.csv", "-q")
    assert result.exit_code == 0, result.stderr
    assert len(list((tmp_path / "photos" / ".maps").iterdir())) == 4


def test_dash_is_stdout_for_score(run, models, inputs, tmp_path):
    result = run("score", "photos", "-m", models["ae"], "-o", "-", "-q")
    assert result.exit_code == 0 and result.stdout.startswith("path,score,threshold,anomalous")
    assert not (tmp_path / "-").exists()


def test_a_list_on_stdin_is_refused_under_torchrun(run, models, inputs, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # each process would read its own part of the one stdin
    result = run("encode", "--files-from", "-", "-m", models["ae"], "-o", "z.npy", input="one.png\n")
    assert result.exit_code == 2 and "write the list to a file" in result.stderr, result.stderr

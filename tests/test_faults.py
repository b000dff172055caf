"""Faults: kill -9 at a random moment, full disks, unwritable directories.

Whatever happens, an output is absent or whole (byte-identical to an undisturbed run), and no
input is ever modified. The kill moments are random; a failure prints the one it used.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import blobs, write_pngs

from aecli.io import modelfile

AE = [sys.executable, "-m", "aecli"]
ENV = {**os.environ, "COLUMNS": "200"}


def digest(path: Path) -> str:
    """One hash over a file or a whole tree: names and bytes."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode() + p.read_bytes())
    return h.hexdigest()


def visible(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def test_kill_9_during_training_leaves_a_loadable_epoch_and_resume_finishes(tmp_path):
    np.save(tmp_path / "x.npy", blobs(96))
    args = ["train", "x.npy", "--epochs", "12", "--batch-size", "8", "-o", "m.safetensors"]
    rng = random.Random()
    epoch, extra = rng.randint(1, 10), rng.uniform(0, 0.3)
    moment = f"killed {extra:.3f} s after epoch {epoch}'s line"
    proc = subprocess.Popen([*AE, *args], cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=ENV)
    for line in proc.stderr:  # blocks until that epoch is saved and reported: no sleeping
        if line.startswith(f"epoch {epoch}/12"):
            break
    try:
        proc.wait(timeout=extra)  # the random moment: somewhere in the next epoch, or its save
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    saved = modelfile.load(tmp_path / "m.safetensors", with_optimizer=True)  # whole, or this raises
    assert epoch <= saved.training["epochs"] <= 12, moment
    assert visible(tmp_path) == {"x.npy", "m.safetensors"}, moment  # only a hidden temp file may remain

    if saved.training["complete"]:
        assert saved.optimizer is None, moment  # a finished file is slim
        return  # the kill came after the last save
    assert saved.optimizer["position"] == {"epoch": saved.training["epochs"], "step": 0}, moment
    done = subprocess.run([*AE, *args, "--resume", "-q"], cwd=tmp_path, capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, f"{moment}: {done.stderr}"
    assert modelfile.load(tmp_path / "m.safetensors").training["complete"], moment


@pytest.fixture(scope="module")
def workload(models, tmp_path_factory) -> Path:
    """Inputs big enough that each command runs for a while, and copies of the models."""
    root = tmp_path_factory.mktemp("faults")
    np.save(root / "many.npy", np.concatenate([blobs(2000, seed=s) for s in range(2)]))
    write_pngs(root / "pngs", blobs(200))
    for name in ("ae", "dae"):
        shutil.copy(models[name], root / f"{name}.safetensors")
    return root


KILLED_COMMANDS = {
    "encode": (["encode", "many.npy", "-m", "ae.safetensors", "-o", "out.npy"], "out.npy"),
    "score -o": (["score", "many.npy", "-m", "ae.safetensors", "-o", "out.csv"], "out.csv"),
    "denoise": (["denoise", "pngs", "-m", "dae.safetensors", "--add-noise", "0.1", "-o", "out"], "out"),
    "calibrate": (["calibrate", "many.npy", "-m", "target.safetensors"], "target.safetensors"),
}


@pytest.mark.parametrize("command", list(KILLED_COMMANDS))
def test_kill_9_mid_command_leaves_no_partial_output_and_inputs_untouched(workload, tmp_path, command):
    args, output = KILLED_COMMANDS[command]
    for name in ("many.npy", "pngs", "ae.safetensors", "dae.safetensors"):
        target = tmp_path / name
        (shutil.copytree if (workload / name).is_dir() else shutil.copy)(workload / name, target)
    shutil.copy(workload / "ae.safetensors", tmp_path / "target.safetensors")
    inputs = {name: digest(tmp_path / name) for name in ("many.npy", "pngs", "ae.safetensors", "dae.safetensors")}
    before = digest(tmp_path / "target.safetensors")

    started = time.perf_counter()
    whole = subprocess.run([*AE, *args, "-q"], cwd=tmp_path, capture_output=True, env=ENV)
    seconds = time.perf_counter() - started
    assert whole.returncode == 0, whole.stderr
    expected = digest(tmp_path / output)
    reference = {p.relative_to(tmp_path / output): p.read_bytes() for p in (tmp_path / output).rglob("*.png")}
    shutil.rmtree(tmp_path / output) if (tmp_path / output).is_dir() else (tmp_path / output).unlink()
    if command == "calibrate":
        shutil.copy(workload / "ae.safetensors", tmp_path / "target.safetensors")

    moment = random.Random().uniform(0.6, 1.0) * seconds  # mostly after start-up: at work or writing
    proc = subprocess.Popen([*AE, *args, "-q"], cwd=tmp_path, stderr=subprocess.PIPE, env=ENV)
    try:
        proc.wait(timeout=moment)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    where = f"killed at {moment:.2f} s of {seconds:.2f} (rc {proc.returncode})"

    out = tmp_path / output
    if command == "denoise":  # one file per image, each written whole (a hidden temp file may be left)
        for path in out.rglob("[!.]*") if out.exists() else []:
            assert path.is_dir() or path.read_bytes() == reference[path.relative_to(out)], f"{where}: {path}"
    elif command == "calibrate":
        assert digest(out) in (before, expected), where  # the old file or the new one, never a mix
    else:
        assert not out.exists() or digest(out) == expected, where
    assert {n: digest(tmp_path / n) for n in inputs} == inputs, f"{where}: an input changed"


def _one_error_line(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("command", ["encode", "score"])
def test_a_full_disk_on_stdout_is_one_line_and_exit_1(models, tmp_path, command):
    np.save(tmp_path / "x.npy", blobs(64))
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [*AE, command, "x.npy", "-m", models["ae"], "-q"], cwd=tmp_path, stdout=full, stderr=subprocess.PIPE,
            text=True, env=ENV,
        )  # fmt: skip
    assert result.returncode == 1
    _one_error_line(result.stderr, "cannot write to standard output: No space left on device")


FILE_OUTPUTS = {
    "train": lambda m, x: ["train", x, "--epochs", "1", "-o", "out.safetensors"],
    "encode": lambda m, x: ["encode", x, "-m", m, "-o", "out.npy"],
    "score": lambda m, x: ["score", x, "-m", m, "-o", "out.csv"],
    "calibrate": lambda m, x: ["calibrate", x, "-m", m, "-o", "out.safetensors"],
    "denoise": lambda m, x: ["denoise", x, "-m", m.with_name("dae.safetensors"), "-o", "out"],  # made with parents
    "sample": lambda m, x: ["sample", "-m", m, "-n", "4", "--grid", "out.png"],
}


@pytest.mark.parametrize("command", list(FILE_OUTPUTS))
def test_a_full_disk_on_a_file_is_one_line_and_leaves_nothing(run, models, tmp_path, monkeypatch, command):
    np.save(tmp_path / "x.npy", blobs(16))

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("aecli.io.files.os.fsync", no_space)  # every output goes through atomic_output
    model_before = models["ae"].read_bytes()
    result = run(*FILE_OUTPUTS[command](models["ae"], tmp_path / "x.npy"), "-q")
    assert result.exit_code == 1
    _one_error_line(result.stderr, "No space left on device")
    leftovers = {p.name for p in tmp_path.iterdir()} - {"x.npy"}
    assert leftovers <= {"out"} and not list(tmp_path.rglob("*.png")), leftovers  # denoise: an empty dir at most
    assert models["ae"].read_bytes() == model_before


@pytest.mark.parametrize("command", list(FILE_OUTPUTS))
def test_an_output_below_a_file_or_a_missing_directory_fails_before_any_work(run, models, tmp_path, command):
    np.save(tmp_path / "x.npy", blobs(16))
    (tmp_path / "a-file").write_text("not a directory")
    for parent in ("a-file", "no/such/dir") if command != "denoise" else ("a-file",):
        args = [str(a).replace("out", f"{parent}/out") for a in FILE_OUTPUTS[command](models["ae"], "x.npy")]
        result = run(*args)
        assert result.exit_code == 1, result.stderr
        _one_error_line(result.stderr, parent)
    assert (tmp_path / "a-file").read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory")
@pytest.mark.parametrize("command", list(FILE_OUTPUTS))
def test_an_unwritable_directory_fails_before_any_work(run, models, tmp_path, command):
    np.save(tmp_path / "x.npy", blobs(16))
    (tmp_path / "locked").mkdir(mode=0o555)
    args = [str(a).replace("out", "locked/out") for a in FILE_OUTPUTS[command](models["ae"], "x.npy")]
    result = run(*args)
    assert result.exit_code == 1
    _one_error_line(result.stderr, "not writable")

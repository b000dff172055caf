"""Hostile or foreign model files against every command that takes one, and fuzzed readers.

Each case must end in one `Error:` line and exit 1, with nothing unpickled or executed. The
property tests feed random and mutated bytes to the model loader and the .npy / IDX / image
readers: the project's own error type is the only exception that may come out.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import blobs, write_idx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from aecli.io import modelfile
from aecli.data.arrays import read_idx_array, read_npy
from aecli.data.images import read_image
from aecli.errors import AecliError


class _Trap:
    """Unpickling this creates a file: proof that something ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _split(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def _with_metadata(good: bytes, **changes: str) -> bytes:
    header, body = _split(good)
    header["__metadata__"] = {**header["__metadata__"], **changes}
    return _join(header, body)


def _config(good: bytes, **changes) -> str:
    header, _ = _split(good)
    return json.dumps({**json.loads(header["__metadata__"]["model_config"]), **changes})


def _lying_offsets(good: bytes) -> bytes:
    header, body = _split(good)
    name = next(k for k in header if k != "__metadata__")
    header[name] = {**header[name], "data_offsets": [0, 10**12]}
    return _join(header, body)


@pytest.fixture(scope="module")
def hostile(models, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name: (file, what the error says)."""
    root = tmp_path_factory.mktemp("hostile")
    good = models["ae"].read_bytes()
    torch.save(_Trap(root / "EXECUTED"), root / "trap.pt")
    torch.save(_Trap(root / "EXECUTED"), root / "legacy.pth", _use_new_zipfile_serialization=False)
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, root / "foreign.safetensors")
    files = {
        "random bytes": (np.random.default_rng(0).bytes(4096), "not a safetensors model file"),
        "empty file": (b"", "not a safetensors model file"),
        "truncated safetensors": (good[: len(good) // 2], "not a safetensors model file"),
        "header lies about offsets": (_lying_offsets(good), "not a safetensors model file"),
        "header claims 2**60 bytes": (struct.pack("<Q", 2**60) + b"{}", "not a safetensors model file"),
        "newer format version": (_with_metadata(good, format_version="99"), "newer than this aecli reads"),
        "config does not match the tensors": (
            _with_metadata(good, model_config=_config(good, latent_dim=7)),
            "weights do not match the model config",
        ),
        "config asks for a huge model": (
            _with_metadata(good, model_config=_config(good, latent_dim=10**9, widths=[10**6, 10**6])),
            "weights do not match the model config",
        ),
        "metadata that is not JSON": (_with_metadata(good, model_config="{not json"), "damaged aecli metadata"),
    }
    out = {name: (root / f"{i}.safetensors", reason) for i, (name, (_, reason)) in enumerate(files.items())}
    for name, (data, _) in files.items():
        out[name][0].write_bytes(data)
    out["PyTorch pickle (zip)"] = (root / "trap.pt", "PyTorch pickle checkpoint, which aecli never unpickles")
    out["PyTorch pickle (legacy)"] = (root / "legacy.pth", "PyTorch pickle checkpoint, which aecli never unpickles")
    out["safetensors from another tool"] = (root / "foreign.safetensors", "without aecli metadata")
    out["a directory"] = (root, "not a file")
    out["a missing file"] = (root / "missing.safetensors", "no such model file")
    return out


def command_lines(model: Path, tmp_path: Path) -> dict[str, list]:
    np.save(tmp_path / "x.npy", blobs(4))
    np.save(tmp_path / "z.npy", np.zeros((2, 32), np.float32))
    return {
        "encode": ["encode", tmp_path / "x.npy", "-m", model, "-o", tmp_path / "out.npy"],
        "decode": ["decode", tmp_path / "z.npy", "-m", model, "-o", tmp_path / "out"],
        "denoise": ["denoise", tmp_path / "x.npy", "-m", model, "-o", tmp_path / "out"],
        "sample": ["sample", "-m", model, "-o", tmp_path / "out"],
        "score": ["score", tmp_path / "x.npy", "-m", model, "-o", tmp_path / "out.csv"],
        "calibrate": ["calibrate", tmp_path / "x.npy", "-m", model, "-o", tmp_path / "out.safetensors"],
        "info": ["info", model],
        "train --resume": ["train", tmp_path / "x.npy", "--resume", "-o", model],
    }


COMMANDS = ["encode", "decode", "denoise", "sample", "score", "calibrate", "info", "train --resume"]
# `ae info` reads the header and never builds the model (no torch): whether the weights fit the
# config is for the commands that load it to check
CHECKED_ON_LOAD = ("config does not match the tensors", "config asks for a huge model")


@pytest.mark.parametrize("command", COMMANDS)
def test_hostile_model_files_give_one_line_and_run_nothing(run, hostile, command, tmp_path):
    for name, (path, reason) in hostile.items():
        before = path.read_bytes() if path.is_file() else None
        result = run(*command_lines(path, tmp_path)[command])
        if command == "info" and name in CHECKED_ON_LOAD:
            assert result.exit_code == 0 and "latent_dim" in result.stdout, f"{name}: {result.stderr}"
            continue
        assert result.exit_code == 1, f"{name}: {result.stderr}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and reason in lines[0], f"{name}: {result.stderr}"
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.*")), name
        assert before is None or path.read_bytes() == before, f"{name}: the model file was changed"
    assert not (path.parent / "EXECUTED").exists(), "a pickle was unpickled"


# Property tests: arbitrary bytes in, AecliError or a result out, never anything else.

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _mutations(base: bytes):
    """Bytes flipped, cut short, or spliced: what disks, networks and attackers produce."""
    flips = st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(1, 255)), min_size=1, max_size=8)
    flipped = flips.map(lambda fs: _apply(base, fs))
    cut = st.integers(0, len(base) - 1).map(lambda n: base[:n])
    spliced = st.tuples(st.integers(0, len(base)), st.binary(max_size=64)).map(lambda t: base[: t[0]] + t[1])
    return st.one_of(flipped, cut, spliced, st.binary(max_size=512))


def _apply(base: bytes, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(base)
    for at, mask in flips:
        data[at] ^= mask
    return bytes(data)


def _write(data: bytes, suffix: str) -> Path:
    handle = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    with handle:
        handle.write(data)
    return Path(handle.name)


@pytest.fixture(scope="module")
def small_model_bytes(models) -> bytes:
    return models["ae"].read_bytes()


def test_fuzzed_model_files_raise_only_our_error(small_model_bytes):
    @FUZZ
    @given(data=_mutations(small_model_bytes[:4096]) | _mutations(small_model_bytes))
    def check(data):
        path = _write(data, ".safetensors")
        try:
            for read in (modelfile.describe, modelfile.load):
                try:
                    read(path)
                except AecliError:
                    pass
        finally:
            path.unlink()

    check()


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, blobs(3, size=8).astype(np.float32) / 255)
    return buffer.getvalue()


def test_fuzzed_npy_files_raise_only_our_error():
    @FUZZ
    @given(data=_mutations(_npy_bytes()))
    def check(data):
        path = _write(data, ".npy")
        try:
            images = read_npy(path)
            images.get(np.arange(len(images)))
        except AecliError:
            pass
        finally:
            path.unlink()

    check()


def test_fuzzed_idx_files_raise_only_our_error(tmp_path):
    base = write_idx(tmp_path / "x-idx3-ubyte", blobs(3, size=8)).read_bytes()

    @FUZZ
    @given(data=_mutations(base))
    def check(data):
        path = _write(data, "-idx3-ubyte")
        try:
            np.asarray(read_idx_array(path)).sum()
        except AecliError:
            pass
        finally:
            path.unlink()

    check()


def _image_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    rgb = (np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_fuzzed_images_raise_only_our_error(fmt):
    @FUZZ
    @given(data=_mutations(_image_bytes(fmt)))
    def check(data):
        path = _write(data, ".png")
        try:
            read_image(path)
        except AecliError:
            pass
        finally:
            path.unlink()

    check()

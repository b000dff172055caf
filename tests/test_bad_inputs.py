"""Bad inputs, made on the fly, against every command that reads images.

Each bad file sits among good ones. Without --skip-bad the command stops with one line,
`Error: <file>: <reason>`, exit 1, and writes no output; with it, each bad file gets a warning,
the count comes at the end, and the good images are processed with intact outputs.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import blobs, write_idx, write_pngs
from PIL import Image

from aecli.io import modelfile

GOOD = 6  # good images beside each bad one
COMMANDS = ["train", "encode", "denoise", "score", "calibrate"]


def png_bytes(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", **options)
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def make_symlink_loop(folder: Path) -> None:
    os.symlink(folder / "img002y.png", folder / "img002x.png")
    os.symlink(folder / "img002x.png", folder / "img002y.png")
    os.symlink(folder, folder / "sub")  # a directory loop: never followed


# name: (writes the bad file(s) into the folder, the reason the error gives, how many are bad)
BAD_FILES = {
    "zero-byte": (lambda d: (d / "img002x.png").write_bytes(b""), "empty file", 1),
    "truncated png": (lambda d: (d / "img002x.png").write_bytes(png_bytes(blobs(1)[0])[:60]), "damaged", 1),
    "truncated jpeg": (lambda d: (d / "img002x.jpg").write_bytes(jpeg_bytes(blobs(1, 64)[0])[:300]), "damaged", 1),
    "text named .png": (lambda d: (d / "img002x.png").write_text("hello\n"), "not an image", 1),
    "header claims 100k x 100k": (
        lambda d: (d / "img002x.png").write_bytes(png_header_only(100_000, 100_000)),
        "10,000,000,000 pixels, over the limit",
        1,
    ),
    "fifo named .png": (lambda d: os.mkfifo(d / "img002x.png"), "not a regular file", 1),
    "symlink loop": (make_symlink_loop, "Too many levels of symbolic links", 2),
}


@pytest.fixture
def folder(tmp_path) -> Path:
    write_pngs(tmp_path / "in", blobs(GOOD))
    return tmp_path / "in"


@pytest.fixture
def command_line(models, tmp_path):
    """The command's arguments for INPUTS, and a check of its outputs given how many images made it."""
    copy = tmp_path / "model-copy.safetensors"
    shutil.copy(models["ae"], copy)

    def make(command: str, inputs: list[Path]) -> tuple[list[str], Path, callable]:
        out = tmp_path / "out"
        if command == "train":
            args = ["train", *inputs, "--epochs", "1", "--batch-size", "4", "--image-size", "16", "--val-split", "0"]
            target = out.with_suffix(".safetensors")

            def check(n):
                assert modelfile.load(target).training["complete"]

        elif command == "encode":
            args, target = ["encode", *inputs, "-m", models["ae"]], out.with_suffix(".npy")

            def check(n):
                assert np.load(target).shape[0] == n

        elif command == "denoise":
            args, target = ["denoise", *inputs, "-m", models["dae"]], out

            def check(n):
                written = sorted(target.rglob("*.png"))
                assert len(written) == n and all(Image.open(p).getbbox() is not None for p in written)

        elif command == "score":
            args, target = ["score", *inputs, "-m", models["ae"]], out.with_suffix(".csv")

            def check(n):
                assert len(target.read_text().splitlines()) == n + 1

        else:
            args, target = ["calibrate", *inputs, "-m", copy], out.with_suffix(".safetensors")

            def check(n):
                assert modelfile.describe(target)["calibration"]["metrics"]["mse"]["n"] == n

        return [*args, "-o", target], target, check

    return make


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_no_output(target: Path) -> None:
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith((target.name, f".{target.name}"))]
    if target.is_dir():  # denoise writes each image when it is done: those are whole files
        assert all(Image.open(p).getbbox() is not None for p in target.rglob("*.png"))
    else:
        assert leftovers == [], leftovers


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_stops_the_command_or_is_skipped_with_skip_bad(run, folder, command_line, command, case):
    make_bad, reason, bad = BAD_FILES[case]
    make_bad(folder)
    args, target, check = command_line(command, [folder])
    assert_one_line_error(run(*args), "img002", reason)
    assert_no_output(target)

    result = run(*args, "--skip-bad")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("Warning: skipped ") == bad
    assert f"{bad} unreadable image(s) skipped" in result.stderr
    check(GOOD)


def bad_arrays(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Array files that cannot be opened at all: refused whole."""
    arrays = {
        "complex": (np.zeros((3, 16, 16), np.complex64), "dtype complex64"),
        "object (pickled)": (np.array([{"a": 1}, None, 3], dtype=object), "pickled Python objects"),
        "rank 2": (np.zeros((16, 16), np.float32), "expected images of shape"),
        "rank 5": (np.zeros((2, 2, 16, 16, 1), np.float32), "expected images of shape"),
    }
    out = {}
    for name, (array, reason) in arrays.items():
        path = tmp_path / f"{name.split()[0].replace(' ', '-')}.npy"
        np.save(path, array, allow_pickle=True)
        out[name] = (path, reason)
    lying = write_idx(tmp_path / "lying-idx3-ubyte", blobs(4))
    lying.write_bytes(lying.read_bytes()[:-100])  # the header now claims more than follows
    out["IDX with a lying header"] = (lying, "IDX header says")
    return out


@pytest.mark.parametrize("command", COMMANDS)
def test_array_files_that_cannot_be_opened_are_refused_or_left_out(run, folder, command_line, command, tmp_path):
    for name, (path, reason) in bad_arrays(tmp_path).items():
        args, target, check = command_line(command, [folder, path])
        assert_one_line_error(run(*args), path.name, reason)
        assert_no_output(target)
        result = run(*args, "--skip-bad")
        assert result.exit_code == 0, f"{name}: {result.stderr}"
        assert f"skipped {path}" in result.stderr and "1 unreadable image(s) skipped" in result.stderr
        check(GOOD)
        shutil.rmtree(target) if target.is_dir() else target.unlink()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("poison", ["nan", "inf", "above one", "below zero"])
def test_rows_with_impossible_pixels_are_refused_or_skipped_row_by_row(
    run, folder, command_line, command, poison, tmp_path
):
    array = blobs(5).astype(np.float32) / 255
    array[3] = {"nan": np.nan, "inf": np.inf, "above one": 1.5, "below zero": -0.5}[poison]
    np.save(tmp_path / "x.npy", array)
    args, target, check = command_line(command, [folder, tmp_path / "x.npy"])
    assert_one_line_error(run(*args), "x.npy#3", "finite and in [0, 1]")
    result = run(*args, "--skip-bad")
    assert result.exit_code == 0 and "x.npy#3" in result.stderr, result.stderr
    check(GOOD + 4)


@pytest.mark.parametrize("command", COMMANDS)
def test_inputs_that_name_nothing_are_errors_even_with_skip_bad(run, command_line, command, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "empty"): "no images found",
        str(tmp_path / "nothing-*.png"): "no files match",
        str(tmp_path / "missing"): "no such file, directory or dataset",
    }
    for spec, reason in cases.items():
        args, target, _ = command_line(command, [spec])
        for extra in ([], ["--skip-bad"]):  # nothing to skip to: still an error
            assert_one_line_error(run(*args, *extra), reason)
            assert_no_output(target)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
@pytest.mark.parametrize("command", COMMANDS)
def test_a_file_without_read_permission_is_named(run, folder, command_line, command):
    (folder / "img002x.png").write_bytes(png_bytes(blobs(1)[0]))
    (folder / "img002x.png").chmod(0)
    args, _, check = command_line(command, [folder])
    assert_one_line_error(run(*args), "img002x.png", "Permission denied")
    assert run(*args, "--skip-bad").exit_code == 0
    check(GOOD)


def unusual_images(folder: Path) -> int:
    """Valid images that often trip decoders: each must load, whatever its name or mode."""
    rng = np.random.default_rng(0)
    rgb = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray((rng.random((16, 16)) * 65535).astype(np.uint16)).save(folder / "u1-16bit.png")
    Image.fromarray(rgb).convert("P").save(folder / "u2-palette.png")
    Image.fromarray(rgb).convert("LA").save(folder / "u3-grey-alpha.png")
    Image.fromarray(rgb).convert("RGBA").save(folder / "u4-rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "u5-cmyk.jpg")
    (folder / "u6-jpeg-named.png").write_bytes(jpeg_bytes(rgb))
    Image.fromarray(rgb).save(folder / "u7-big.bmp")
    Image.fromarray(rgb[:8, :12]).save(folder / "u8-small.gif")
    Image.fromarray(rgb).save(folder / "u9.webp")
    Image.fromarray(rgb).save(folder / "u10.tif")
    return 10


@pytest.mark.parametrize("command", COMMANDS)
def test_unusual_but_valid_images_of_mixed_sizes_and_modes_all_load(run, folder, command_line, command):
    extra = unusual_images(folder)
    args, _, check = command_line(command, [folder])
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    check(GOOD + extra)


def test_palette_and_cmyk_images_decode_to_their_true_colours(tmp_path):
    from aecli.data.images import read_image

    unusual_images(tmp_path)
    for name in ("u2-palette.png", "u5-cmyk.jpg", "u6-jpeg-named.png"):
        expected = np.asarray(Image.open(tmp_path / name).convert("RGB"), np.float32) / 255
        got = read_image(tmp_path / name).permute(1, 2, 0).numpy()
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-6, name
    sixteen = read_image(tmp_path / "u1-16bit.png")
    assert sixteen.shape == (1, 16, 16) and float(sixteen.max()) > 0.99  # 16-bit, not clipped to 8


def test_max_pixels_is_checked_before_decoding_and_can_be_raised(run, folder, command_line, models):
    args, _, check = command_line("encode", [folder])
    assert_one_line_error(run(*args, "--max-pixels", "255"), "img000.png", "16x16 is 256 pixels, over the limit of 255")
    assert run(*args, "--max-pixels", "256").exit_code == 0
    check(GOOD)
    huge = folder.parent / "huge.png"
    huge.write_bytes(png_header_only(100_000, 100_000))
    raised = run("encode", huge, "-m", models["ae"], "-o", "z.npy", "--max-pixels", str(10**11))
    assert_one_line_error(raised, "huge.png")  # past the limit now, the decoder finds no pixels
    assert "limit" not in raised.stderr

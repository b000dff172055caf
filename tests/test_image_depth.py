"""Image decoding scales pixels by the file's bit depth, so 16-bit files keep their true values."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin, features

from aecli.data.images import read_image

ROOT = Path(__file__).resolve().parents[1]


def samples(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random 16-bit samples with both ends of the range, so a wrong scale cannot hide."""
    values = np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)
    values.flat[:2] = 0, 65535
    return values


def png16_bytes(values: np.ndarray) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour).

    Rows cycle through the None, Sub and Up filters: Sub reaches back one whole pixel, so it
    catches a decoder that unfilters with the wrong number of bytes per pixel.
    """
    height, width = values.shape[:2]
    channels = 1 if values.ndim == 2 else values.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = values.astype(">u2").reshape(height, -1).view(np.uint8)
    step = 2 * channels  # bytes per pixel
    stream = b""
    for y, row in enumerate(rows):
        kind = y % 3
        filtered = row.copy()
        if kind == 1:
            filtered[step:] = row[step:] - row[:-step]
        elif kind == 2:  # never the first row, which has no row above
            filtered = row - rows[y - 1]
        stream += bytes([kind]) + filtered.tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(stream)) + chunk(b"IEND", b"")


def read_hwc(path: Path) -> np.ndarray:
    pixels = read_image(path)
    assert pixels.dtype.is_floating_point and pixels.dtype.itemsize == 4
    return pixels.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("channels", [1, 2, 3, 4], ids=["grey", "grey-alpha", "rgb", "rgba"])
def test_16bit_pngs_read_at_their_true_values(tmp_path, channels):
    values = samples((7, 9) if channels == 1 else (7, 9, channels))
    path = tmp_path / "sixteen.png"
    path.write_bytes(png16_bytes(values))
    expected = values.reshape(7, 9, channels) / 65535
    got = read_hwc(path)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4


def test_16bit_grey_png_written_by_pillow_reads_at_its_true_values(tmp_path):
    values = samples((6, 5))
    Image.frombytes("I;16", (5, 6), values.astype("<u2").tobytes()).save(tmp_path / "grey.png")
    assert np.abs(read_hwc(tmp_path / "grey.png")[..., 0] - values / 65535).max() < 1e-4


def test_16bit_grey_png_opened_as_32bit_mode_i_is_not_black(tmp_path, monkeypatch):
    """Older Pillow opened 16-bit grey PNGs as mode "I"; the scale must come from the file."""
    values = samples((6, 5))
    (tmp_path / "grey.png").write_bytes(png16_bytes(values))
    monkeypatch.setitem(PngImagePlugin._MODES, (16, 0), ("I", "I;16B"))
    assert Image.open(tmp_path / "grey.png").mode == "I"
    assert np.abs(read_hwc(tmp_path / "grey.png")[..., 0] - values / 65535).max() < 1e-4


TIFF_CASES = [("I;16", None), ("I;16B", None)]
if features.check("libtiff"):
    TIFF_CASES.append(("I;16", "tiff_lzw"))


@pytest.mark.parametrize("mode, compression", TIFF_CASES)
def test_16bit_grey_tiffs_read_at_their_true_values(tmp_path, mode, compression):
    values = samples((6, 5))
    raw = values.astype("<u2" if mode == "I;16" else ">u2").tobytes()
    Image.frombytes(mode, (5, 6), raw).save(tmp_path / "grey.tif", compression=compression)
    assert np.abs(read_hwc(tmp_path / "grey.tif")[..., 0] - values / 65535).max() < 1e-4


def test_32bit_tiff_scales_by_the_int32_range(tmp_path):
    values = np.array([[0, 1 << 20, 1 << 30, 2**31 - 1]], dtype=np.int32)
    Image.fromarray(values).save(tmp_path / "wide.tif")
    assert np.abs(read_hwc(tmp_path / "wide.tif")[..., 0] - values / (2**31 - 1)).max() < 1e-6


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_8bit_pngs_still_scale_by_255(tmp_path, mode):
    values = np.random.default_rng(1).integers(0, 256, (6, 5, len(mode)), dtype=np.uint8)
    Image.fromarray(values[..., 0] if mode == "L" else values).save(tmp_path / "eight.png")
    assert np.abs(read_hwc(tmp_path / "eight.png") - values / 255).max() < 1e-6


def test_pillow_is_a_declared_dependency():
    """images.py imports Pillow directly, so a bare `pip install aecli` must bring it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; 3.10 is still supported
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.lower().startswith("pillow") for d in dependencies)

"""JPEG batches decoded on a CUDA device: the loader only reads the files, nvjpeg decodes a batch in one call.

On a GPU machine the CPU's decoding is what starves the model; nvjpeg (and the H100's decode
engines) take the work off it. A JPEG nvjpeg should not be given (CMYK, cut short, over
--max-pixels, not a regular file) or fails on goes to read_image on the CPU instead, so it loads,
is skipped or stops the run exactly as it would without a GPU.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aecli.data.images import _safe_for_torchvision
from aecli.data.inputs import Batch, ImageSet
from aecli.errors import InputError

JPEG_SUFFIXES = {".jpg", ".jpeg"}
_FIT_ELEMENTS = 64 * 2**20  # images fitted together per call: 256 MB of float pixels, however large each is


def has_jpegs(images: ImageSet) -> bool:
    paths = (p for part in images.parts for p in getattr(part, "paths", []))
    return any(os.path.splitext(p)[1].lower() in JPEG_SUFFIXES for p in paths)


@dataclass
class Encoded:
    """A batch half-read in a loader worker: its JPEGs' bytes, and the other images decoded on the CPU."""

    indices: list[int]  # the batch, in the order asked
    rows: list[int]  # its JPEGs
    data: list[torch.Tensor]  # their bytes, uint8
    decoded: Batch  # the rest, as ImageSet.load reads them

    @property
    def error(self) -> str | None:
        return self.decoded.error

    def pin_memory(self) -> Encoded:  # DataLoader(pin_memory=True) calls it on CUDA
        return dataclasses.replace(self, decoded=self.decoded.pin_memory())


def read(images: ImageSet, indices: np.ndarray, channels, size, resize, strict) -> Batch | Encoded:
    """What a loader worker does for a batch bound for a CUDA device (arguments as ImageSet.load)."""
    rows, data, rest = [], [], []
    for i in indices.tolist():
        raw = _decodable(images.path(i), images.max_pixels)
        if raw is None:
            rest.append(i)
        else:
            rows.append(i)
            data.append(torch.frombuffer(raw, dtype=torch.uint8))
    if not rows:
        return images.load(indices, channels, size, resize, strict)
    return Encoded(indices.tolist(), rows, data, images.load(np.asarray(rest, np.int64), channels, size, resize, strict))


def _without_waiting(path: str, flags: int) -> int:
    """open()'s opener: a FIFO named x.jpg opens at once (to be turned away) instead of waiting for a writer."""
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def _decodable(path: Path | None, max_pixels: int) -> bytearray | None:
    """A JPEG file's bytes where nvjpeg can decode them as read_image would; None sends it to read_image.

    This runs for every file in the thread that feeds the GPU, so it costs one open, one stat and
    one read straight into the buffer the tensor will share (benchmarks/gpu.py: "stage: read").
    """
    if path is None or os.path.splitext(path)[1].lower() not in JPEG_SUFFIXES:
        return None
    try:
        with open(path, "rb", buffering=0, opener=_without_waiting) as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size < 4:
                return None
            data = bytearray(info.st_size)
            del data[file.readinto(data) :]  # a file cut short since the stat keeps what it has
        frame = _plain_header(data)
    except (OSError, struct.error):
        return None
    if not frame or not _safe_for_torchvision(data):
        return None
    width, height, components = frame
    return data if components in (1, 3) and 0 < width * height <= max_pixels else None


_HUFFMAN_FRAMES = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive; not lossless or arithmetic
_SKIPPED = {0xDD, 0xFE, *range(0xE0, 0xF0)}  # restart interval, comment, application data


def _plain_header(data: bytes | bytearray) -> tuple[int, int, int] | None:
    """(width, height, components) of a Huffman-coded JPEG whose segments are whole up to its scan.

    torchvision does not check what nvjpeg's header parser returns, and a damaged header (tables
    of zeros, say) crashed the process on an H100; so only these headers reach it.
    """
    i, frame, tables = 2, None, set()
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], (data[i + 2] << 8) | data[i + 3]
        start, end = i + 4, i + 2 + length
        if length < 2 or end > len(data):
            return None
        if marker == 0xDA:  # start of scan
            return frame if tables == {0xC4, 0xDB} else None
        if marker in _HUFFMAN_FRAMES and frame is None and length >= 8:
            height, width, components = struct.unpack_from(">HHB", data, start + 1)
            frame = (width, height, components)
        elif marker == 0xC4 and _huffman_tables_whole(data, start, end):
            tables.add(marker)
        elif marker == 0xDB and (length - 2) % 65 in (0, 64) and length > 2:  # 8- or 16-bit tables: 65 or 129 bytes
            tables.add(marker)
        elif marker not in _SKIPPED:
            return None
        i = end
    return None


def _huffman_tables_whole(data: bytes | bytearray, start: int, end: int) -> bool:
    """Each table in data[start:end] has 16 code counts adding up to 1..256 symbols, and the symbols fill it."""
    while start < end:
        if end - start < 17:
            return False
        symbols = sum(data[start + 1 : start + 17])
        if not 0 < symbols <= 256 or end - start < 17 + symbols:
            return False
        start += 17 + symbols
    return True


def decode(
    encoded: Encoded, images: ImageSet, device: torch.device, channels, size, resize, strict
) -> Batch:  # fmt: skip
    """The whole batch on `device` in the order asked, its JPEGs decoded there in one call."""
    if encoded.error:
        return encoded.decoded
    pixels = _decode_all(encoded.data, device)
    good = [i for i, x in zip(encoded.rows, pixels) if x is not None]
    late = images.load(np.asarray([i for i, x in zip(encoded.rows, pixels) if x is None], np.int64),
                       channels, size, resize, strict)  # fmt: skip
    if late.error:
        return late
    try:
        pieces = _fitted(images, good, [x for x in pixels if x is not None], channels, size, resize)
    except InputError as e:
        return Batch([], torch.empty(0, dtype=torch.long), error=str(e))
    for part in (encoded.decoded, late):
        moved = part.pixels.to(device, non_blocking=True) if torch.is_tensor(part.pixels) else part.pixels
        pieces.update(zip(part.index.tolist(), (x.to(device, non_blocking=True) for x in moved)))
    kept = [i for i in encoded.indices if i in pieces]
    index, skipped = torch.tensor(kept, dtype=torch.long), encoded.decoded.skipped + late.skipped
    if not size:
        return Batch([pieces[i] for i in kept], index, skipped)
    if not kept:
        return Batch(torch.empty(0, channels or 1, size, size, device=device), index, skipped)
    return Batch(torch.stack([pieces[i] for i in kept]), index, skipped)


def _decode_all(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """(C, H, W) uint8 on the device for each JPEG, C 1 or 3 as read_image gives; None where nvjpeg fails.

    One failure fails the batched call, so then each is tried alone."""
    with warnings.catch_warnings():  # torchvision 0.29 warns that TorchCodec will take over
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return list(decode_jpeg(data, ImageReadMode.UNCHANGED, device=device))
        except RuntimeError:
            pass
        decoded = []
        for one in data:
            try:
                decoded.append(decode_jpeg(one, ImageReadMode.UNCHANGED, device=device))
            except RuntimeError:
                decoded.append(None)
        return decoded


def _fitted(images: ImageSet, rows: list[int], pixels: list[torch.Tensor], channels, size, resize) -> dict:
    """Each image fitted as ImageSet.load fits it, images of one shape together; {index: (C, H, W)}."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for n, x in enumerate(pixels):
        groups.setdefault(tuple(x.shape), []).append(n)
    fitted = {}
    for shape, members in groups.items():
        step = max(1, _FIT_ELEMENTS // math.prod(shape))
        for start in range(0, len(members), step):
            chunk = members[start : start + step]
            x = torch.stack([pixels[n] for n in chunk]).float().div_(255)
            x = ImageSet._fit(x, channels, size, resize, images.name(rows[chunk[0]]))
            fitted.update(zip((rows[n] for n in chunk), x))
    return fitted

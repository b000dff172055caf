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
    return any(Path(p).suffix.lower() in JPEG_SUFFIXES for part in images.parts for p in getattr(part, "paths", []))


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
            data.append(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    if not rows:
        return images.load(indices, channels, size, resize, strict)
    return Encoded(indices.tolist(), rows, data, images.load(np.asarray(rest, np.int64), channels, size, resize, strict))


def _decodable(path: Path | None, max_pixels: int) -> bytes | None:
    """A JPEG file's bytes where nvjpeg can decode them as read_image would; None sends it to read_image."""
    if path is None or Path(path).suffix.lower() not in JPEG_SUFFIXES:
        return None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        data = Path(path).read_bytes()
        frame = _plain_header(data)
    except (OSError, struct.error):
        return None
    if not frame or not _safe_for_torchvision(data):
        return None
    width, height, components = frame
    return data if components in (1, 3) and 0 < width * height <= max_pixels else None


_HUFFMAN_FRAMES = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive; not lossless or arithmetic
_SKIPPED = {0xDD, 0xFE, *range(0xE0, 0xF0)}  # restart interval, comment, application data


def _plain_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) of a Huffman-coded JPEG whose segments are whole up to its scan.

    torchvision does not check what nvjpeg's header parser returns, and a damaged header (tables
    of zeros, say) crashed the process on an H100; so only these headers reach it.
    """
    i, frame, tables = 2, None, set()
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if length < 2 or i + 2 + length > len(data):
            return None
        body = data[i + 4 : i + 2 + length]
        if marker == 0xDA:  # start of scan
            return frame if tables == {0xC4, 0xDB} else None
        if marker in _HUFFMAN_FRAMES and frame is None and len(body) >= 6:
            height, width, components = struct.unpack(">HHB", body[1:6])
            frame = (width, height, components)
        elif marker == 0xC4 and _huffman_tables_whole(body):
            tables.add(marker)
        elif marker == 0xDB and len(body) % 65 in (0, 64) and body:  # 8- or 16-bit tables: 65 or 129 bytes
            tables.add(marker)
        elif marker not in _SKIPPED:
            return None
        i += 2 + length
    return None


def _huffman_tables_whole(body: bytes) -> bool:
    """Each table's 16 code counts add up to 1..256 symbols, and the symbols fill the segment."""
    while body:
        if len(body) < 17:
            return False
        symbols = sum(body[1:17])
        if not 0 < symbols <= 256 or len(body) < 17 + symbols:
            return False
        body = body[17 + symbols :]
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

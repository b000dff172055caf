"""Stacks of images held in arrays: .npy / .npz files and IDX files (MNIST's format).

.npy and uncompressed IDX files are memory-mapped, so only the rows a batch asks for are read.
Compressed files (.npz, .gz) are decompressed once into memory: that is their nature.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aecli.errors import InputError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class ArrayImages:
    """N images in an array of layout (N,H,W), (N,H,W,C) or (N,C,H,W); pixels uint8 or [0, 1]."""

    name: str
    array: np.ndarray
    channels_last: bool
    labels: np.ndarray | None = None
    file: Path | None = None  # where it was read from; None for a named dataset

    def __post_init__(self) -> None:
        a = self.array
        if a.ndim == 3:
            self.array, self.channels_last = a[:, :, :, None], True
        if self.array.dtype.kind not in "uif":
            raise InputError(f"{self.name}: pixels of dtype {a.dtype} (expected uint8, uint16 or float in [0, 1])")

    def __len__(self) -> int:
        return self.array.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, a, b, c = self.array.shape
        return (c, a, b) if self.channels_last else (a, b, c)

    def get(self, rows: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Rows as (B, C, H, W) float32, and which are usable (finite, in [0, 1]): the caller
        decides whether a bad row is fatal. Rows are read in sorted order, then reordered."""
        order = np.argsort(rows, kind="stable")
        chunk = np.asarray(self.array[rows[order]])
        chunk = chunk[np.argsort(order, kind="stable")]
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(chunk.dtype.newbyteorder("="))
        x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))  # also native byte order (IDX)
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        if scale is not None:  # 8- or 16-bit pixels: in range by construction
            return x.div_(scale), np.ones(len(rows), bool)
        usable = (torch.isfinite(x) & (x >= 0) & (x <= 1)).flatten(1).all(1)
        return x, usable.numpy()


def _layout(name: str, array: np.ndarray) -> bool:
    """True for channels-last; (N,C,H,W) is recognised by a small second axis and a large last one."""
    if array.ndim == 3:
        return True
    if array.ndim != 4:
        raise InputError(f"{name}: expected images of shape (N,H,W), (N,H,W,C) or (N,C,H,W), got {array.shape}")
    if array.shape[-1] in (1, 2, 3, 4):
        return True
    if array.shape[1] in (1, 2, 3, 4):
        return False
    raise InputError(f"{name}: cannot tell the channel axis of shape {array.shape} (1, 3 or 4 channels)")


def read_npy(path: Path) -> ArrayImages:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # a damaged header can raise almost anything from numpy's parser
        if "Python objects" in str(e) or "allow_pickle" in str(e):
            raise InputError(f"{path}: holds pickled Python objects, which aecli never loads") from None
        raise InputError(f"{path}: not a readable .npy array ({_first_line(e)})") from None
    return ArrayImages(str(path), array, _layout(str(path), array), file=path)


def read_npz(path: Path) -> ArrayImages:
    """The array named images (or x), else the only array of rank 3 or 4; `labels` if present."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as e:  # zip and .npy headers alike: numpy's parsers raise many kinds
        if "allow_pickle" in str(e):
            raise InputError(f"{path}: holds pickled Python objects, which aecli never loads") from None
        raise InputError(f"{path}: not a readable .npz archive ({_first_line(e)})") from None
    key = next((k for k in ("images", "x") if k in arrays), None)
    if key is None:
        stacks = [k for k, a in arrays.items() if a.ndim in (3, 4)]
        if len(stacks) != 1:
            raise InputError(f"{path}: cannot tell which array holds the images (arrays: {', '.join(arrays)}); name it 'images'")
        key = stacks[0]
    array, labels = arrays[key], arrays.get("labels")
    if labels is not None and labels.shape[:1] != array.shape[:1]:
        labels = None
    return ArrayImages(str(path), array, _layout(str(path), array), labels, path)


def is_idx(path: Path) -> bool:
    return "idx" in path.name and "ubyte" in path.name


def read_idx_array(path: Path) -> np.ndarray:
    """An IDX file's array, checking that its header tells the truth about its size."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
            header = data[:20]
        else:
            with open(path, "rb") as f:
                header = f.read(20)
            data = None
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: cannot read IDX file ({_first_line(e)})") from None
    if len(header) < 4 or header[:2] != b"\0\0" or header[2] not in _IDX_DTYPES or not 1 <= header[3] <= 4:
        raise InputError(f"{path}: not an IDX file (bad magic number)")
    ndim, dtype = header[3], np.dtype(_IDX_DTYPES[header[2]])
    head = header[4 : 4 + 4 * ndim]
    if len(head) < 4 * ndim:
        raise InputError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(head, dtype=">u4"))
    offset, expected = 4 + 4 * ndim, int(np.prod(shape)) * dtype.itemsize
    available = (len(data) if data is not None else path.stat().st_size) - offset
    if available != expected:
        raise InputError(f"{path}: IDX header says {shape} ({expected} bytes) but {available} bytes follow")
    if data is not None:
        return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def read_idx(path: Path, labels: np.ndarray | None = None) -> ArrayImages:
    array = read_idx_array(path)
    if array.ndim not in (3, 4):
        raise InputError(f"{path}: IDX array of shape {array.shape} is not a stack of images")
    return ArrayImages(str(path), array, _layout(str(path), array), labels, path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

"""Streaming an ImageSet in batches through a DataLoader: memory holds a few batches, never the set.

The sampler yields whole batches of indices and the dataset reads each batch in one call
(automatic batching off), so arrays are sliced in one go instead of image by image.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from aecli.data import gpu_jpeg
from aecli.data.arrays import ArrayImages
from aecli.data.images import TORCHVISION_SUFFIXES, torchvision_decoder
from aecli.data.inputs import Batch, FileImages, ImageSet
from aecli.data.prefetch import ahead
from aecli.errors import InputError


@dataclass
class _Batches(Dataset):
    images: ImageSet
    channels: int
    size: int
    resize: str | None
    strict: bool
    jpeg_bytes: bool = False  # JPEG files are only read here, and decoded on the device (gpu_jpeg)

    def __getitem__(self, indices: np.ndarray) -> Batch | gpu_jpeg.Encoded:
        if self.jpeg_bytes:
            return gpu_jpeg.read(self.images, indices, self.channels, self.size, self.resize, self.strict)
        return self.images.load(indices, self.channels, self.size, self.resize, self.strict)


def default_workers(images: ImageSet) -> int:
    """Arrays are sliced faster in-process; image files decode in parallel on spare cores.

    With 2 cores or fewer there are none to spare: the model's own threads use them, and
    benchmarks/stream_encode.py measured worker processes there as a loss.
    """
    cores = os.cpu_count() or 1
    if cores <= 2 or all(isinstance(p, ArrayImages) for p in images.parts):
        return 0
    return min(4, cores - 1)


def _decodes_with_torchvision(images: ImageSet) -> bool:
    files = (path for part in images.parts if isinstance(part, FileImages) for path in part.paths)
    return any(Path(path).suffix.lower() in TORCHVISION_SUFFIXES for path in files)


def batch_indices(order: Sequence[int] | np.ndarray, batch_size: int) -> list[np.ndarray]:
    order = np.asarray(order, dtype=np.int64)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def stream(
    images: ImageSet,
    batches: list[np.ndarray],
    channels: int,
    size: int,
    *,
    workers: int | None = None,
    resize: str | None = "stretch",
    strict: bool = False,
    pin_memory: bool = False,
    device: torch.device | None = None,
) -> Iterator[Batch]:
    """Yield each batch in order; a fatal input error is raised here, in the main process.

    resize: how images of another size are fitted (data.images.to_size), None: they are an error.
    device: where the batches go. On CUDA, JPEG files are decoded there (their pixels stay there),
    and the next batch is made in a thread while the caller's kernels run on this one.
    """
    cuda = device is not None and device.type == "cuda"
    on_device = cuda and gpu_jpeg.has_jpegs(images)
    if workers is None:  # reading JPEG files' bytes needs no processes, whose start and traffic cost more
        workers = 0 if on_device else default_workers(images)
    if (workers or on_device) and _decodes_with_torchvision(images):
        torchvision_decoder()  # once, here: forked workers and the prefetch thread inherit it
    loader = DataLoader(
        _Batches(images, channels, size, resize, strict, on_device),
        batch_size=None,
        sampler=batches,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    made = _decoded(iter(loader), images, device, channels, size, resize, strict)  # workers start here
    for batch in ahead(made) if _prefetch(cuda, workers) else made:
        if batch.error:
            raise InputError(batch.error)
        yield batch


def _prefetch(cuda: bool, workers: int) -> bool:
    """On CUDA a thread makes the next batch (and decodes its JPEGs there) while the caller's
    kernels run. On the CPU it measured no gain (benchmarks/stream_encode.py) and would run
    beside the model's own threads, so batches are made in turn, as ever."""
    return cuda


def _decoded(loaded: Iterator, images: ImageSet, device, channels, size, resize, strict) -> Iterator[Batch]:
    for batch in loaded:
        if isinstance(batch, gpu_jpeg.Encoded):
            batch = gpu_jpeg.decode(batch, images, device, channels, size, resize, strict)
        yield batch

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
    jpegs_on_device: bool | None = None,
) -> Iterator[Batch]:
    """Yield each batch in order; a fatal input error is raised here, in the main process.

    resize: how images of another size are fitted (data.images.to_size), None: they are an error.
    device: where the batches go. On CUDA the next batch is made in a thread while the caller's
    kernels run on this one.
    jpegs_on_device: JPEG files are only read by the loader and decoded on `device`, a batch a call
    (data.gpu_jpeg), their pixels left there; reading the files has a thread of its own, so it
    overlaps the decoding (which releases the GIL) as well as the caller's work. None: on CUDA,
    where the inputs hold JPEGs.
    """
    cuda = device is not None and device.type == "cuda"
    if jpegs_on_device is None:
        jpegs_on_device = cuda and gpu_jpeg.has_jpegs(images)
    if workers is None:  # reading JPEG files' bytes needs no processes, whose start and traffic cost more
        workers = 0 if jpegs_on_device else default_workers(images)
    if (workers or jpegs_on_device) and _decodes_with_torchvision(images):
        torchvision_decoder()  # once, here: forked workers and the prefetch threads inherit it
    loader = DataLoader(
        _Batches(images, channels, size, resize, strict, jpegs_on_device),
        batch_size=None,
        sampler=batches,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    loaded = iter(loader)  # workers start here
    if jpegs_on_device and not workers and READ_AHEAD:
        loaded = ahead(loaded)
    made = _decoded(loaded, images, device, channels, size, resize, strict)
    for batch in ahead(made) if cuda or jpegs_on_device else made:
        if batch.error:
            raise InputError(batch.error)
        yield batch


# Whether reading JPEG files has its own thread beside the one decoding them on the device;
# benchmarks/gpu.py times encoding both ways. On the CPU, with no device decoding, batches are
# made in turn, as ever: a thread measured no gain there (benchmarks/stream_encode.py) and would
# run beside the model's own threads.
READ_AHEAD = True


def _decoded(loaded: Iterator, images: ImageSet, device, channels, size, resize, strict) -> Iterator[Batch]:
    try:
        for batch in loaded:
            if isinstance(batch, gpu_jpeg.Encoded):
                batch = gpu_jpeg.decode(batch, images, device, channels, size, resize, strict)
            yield batch
    finally:  # a reading thread stops with the stream (its generator's close joins it)
        close = getattr(loaded, "close", None)
        if close is not None:
            close()

"""Training images held on the device: decoded once, each batch gathered there, never copied back.

On a GPU a small model takes a step in less time than a DataLoader needs to slice, convert and
copy a batch, so a set that fits is kept, as the first epoch reads it, in one tensor on the
device: uint8 where every pixel is 8-bit (a quarter of the memory), float32 otherwise. Later
batches are an index into it and a division, and equal the streamed ones bit for bit (for a set
whose batches all stream in one memory layout: see layout_of).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from aecli.data.inputs import Batch

SHARE = 4  # a preloaded set may take up to 1/SHARE of the memory free on its device


class Resident:
    """N model-sized images on `device`, filled as the first epoch streams them past (fill), then
    served from there (stream). Rows that did not load stay absent, as streaming skips them."""

    def __init__(self, n: int, shape: tuple[int, int, int], device: torch.device):
        self.pixels = torch.zeros(n, *shape, dtype=torch.uint8, device=device)
        self.seen, self.present = np.zeros(n, bool), np.zeros(n, bool)
        self.given_up = False  # pixels that are not 8-bit, whose float32 copy would not fit

    @property
    def complete(self) -> bool:
        return not self.given_up and bool(self.seen.all())

    def fill(self, batches: list[np.ndarray], streamed: Iterable[Batch]) -> Iterator[Batch]:
        """Pass the streamed batches on, keeping a copy of each on the device."""
        for rows, batch in zip(batches, streamed):
            if not self.given_up:
                self.keep(rows, batch)
            yield batch

    def keep(self, rows: np.ndarray, batch: Batch) -> None:
        if len(batch.index):
            x, device = batch.pixels, self.pixels.device
            if not self.present.any():  # the first: hold the set in the strides it streams in
                self.pixels = torch.empty_like(self.pixels, memory_format=layout_of(x)).zero_()
            if self.pixels.dtype == torch.uint8 and not _eight_bit(x):
                if not fits(len(self.pixels), self.pixels.shape[1:], device, 4, held=self.pixels.numel()):
                    self.given_up, self.pixels = True, self.pixels[:0]
                    return
                self.pixels = self.pixels.float().div_(255)
            at = batch.index.to(device)
            if self.pixels.dtype == torch.uint8:
                self.pixels[at] = x.mul(255).round_().to(device, torch.uint8)
            else:
                self.pixels[at] = x.to(device)
            self.present[batch.index.numpy()] = True
        self.seen[rows] = True

    def stream(self, batches: list[np.ndarray]) -> Iterator[Batch]:
        """The batches' rows that loaded, gathered on the device: one upload of the rows for all of them."""
        kept = [b[self.present[b]] for b in batches]
        ends = np.cumsum([0] + [len(b) for b in kept])
        rows = torch.from_numpy(np.concatenate(kept) if kept else np.empty(0, np.int64)).to(self.pixels.device)
        for k, b in enumerate(kept):
            on_device = rows[ends[k] : ends[k + 1]]
            yield Batch(self.gather(on_device), torch.from_numpy(b), rows=on_device)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        x = self.pixels[rows]
        return x.float().div_(255) if x.dtype == torch.uint8 else x


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format a batch streams in: channels-last for arrays stored so (a 1-channel one's
    strides fit both), plain for files. Convolutions take another path on each, with other
    rounding, so the held set keeps it and its batches equal the streamed ones to the bit."""
    last = torch.empty(x.shape, memory_format=torch.channels_last, device="meta").stride()
    return torch.channels_last if x.stride() == last else torch.contiguous_format


def _eight_bit(x: torch.Tensor) -> bool:
    """Whether pixels in [0, 1] are all k/255, as decoding 8-bit images gives them."""
    return torch.equal(x.mul(255).round_().div_(255), x)


def fits(n: int, shape: tuple[int, int, int], device: torch.device, pixel_bytes: int = 1, held: int = 0) -> bool:
    """Whether n images of `shape` at `pixel_bytes` a pixel fit in 1/SHARE of the device's free
    memory, counting as free the `held` bytes a smaller store there would give back."""
    free = _free_memory(device)
    return free is not None and n * int(np.prod(shape)) * pixel_bytes * SHARE <= free + held


def _free_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:  # the CPU's (and Apple's unified memory, which MPS shares)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None

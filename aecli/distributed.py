"""Running under torchrun: the process group, this process's rank, its shard of the work, gathering.

torchrun starts one process per device and tells each its RANK, WORLD_SIZE and LOCAL_RANK.
Everything here is inert with one process (WORLD_SIZE unset or 1), so the library behaves
exactly as before when called from Python or run as plain `ae`.

Every collective waits at most $AE_DIST_TIMEOUT seconds (default 600) for the other processes,
so one that dies or hangs makes the others fail with a one-line error instead of waiting forever;
torchrun itself also stops the other processes of a node when one exits with an error.
"""

from __future__ import annotations

import atexit
import datetime
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from aecli.errors import AecliError, UsageError
from aecli.ranks import active, leader, local_rank, rank, size  # noqa: F401 (re-exported)

DEFAULT_TIMEOUT_S = 600  # long enough for a slow validation pass on one process; short enough to notice a hang


def timeout_s() -> float:
    value = os.environ.get("AE_DIST_TIMEOUT", "").strip()
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise UsageError(f"$AE_DIST_TIMEOUT is '{value}', not a number of seconds") from None
    if seconds <= 0:
        raise UsageError(f"$AE_DIST_TIMEOUT must be positive, not {value}")
    return seconds


def init(device: torch.device) -> None:
    """Join torchrun's process group once (nccl for CUDA, gloo otherwise); a no-op with one process."""
    if not active() or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL and object gathering use the current device
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s()))
    except (RuntimeError, ValueError) as e:
        raise AecliError(f"cannot join the torchrun process group ({backend}): {_first_line(e)}") from None
    atexit.register(_leave)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _collective(fn: Callable[[], Any]) -> Any:
    """Run one collective; a peer that failed or timed out becomes one line, not a traceback."""
    try:
        return fn()
    except RuntimeError as e:  # DistBackendError, gloo's "connection closed by peer", timeouts
        if "timed out" in str(e).lower() or "timeout" in str(e).lower():
            why = f"waited $AE_DIST_TIMEOUT ({timeout_s():g} s) for the other processes"
        else:
            why = "another process failed (see its error)"
        raise AecliError(f"process {rank()} of {size()} stopped: {why}") from e


def barrier() -> None:
    """Wait for every process, e.g. until rank 0 has written the model file the others read."""
    if active():
        _collective(dist.barrier)


def gather(value: Any) -> list[Any]:
    """Every process's `value`, in rank order, on every process ([value] with one process)."""
    if not active():
        return [value]
    parts: list[Any] = [None] * size()
    _collective(lambda: dist.all_gather_object(parts, value))
    return parts


def concat(items: Sequence[Any]) -> list[Any]:
    """Every process's list, joined in rank order: input order when each took a contiguous block."""
    return [item for part in gather(list(items)) for item in part]


def concat_dict(lists: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Every process's dict of lists, each key's lists joined in rank order (keys in first-seen order)."""
    if not active():
        return lists
    joined: dict[str, list[Any]] = {}
    for part in gather(lists):
        for key, values in part.items():
            joined.setdefault(key, []).extend(values)
    return joined


def gathered(local: Any) -> Any:
    """Every process's result of a library call, merged in rank order by its class's `merge`.

    The one collective a command makes per result: library functions take their shard and return
    local results, so calling one on a single process never waits for the others. With one
    process this is `local` itself.
    """
    return type(local).merge(gather(local)) if active() else local


def total(count: int) -> int:
    """A count summed over the processes."""
    return sum(gather(int(count))) if active() else int(count)


def sum_all(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sums over the processes, in one small all-reduce (float64, on the group's device)."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    _collective(lambda: dist.all_reduce(t))
    return t.tolist()


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every process: each process's last
    step updated its own, and evaluation must use the ones rank 0 saves."""
    if active():
        for buffer in model.buffers():
            _collective(lambda: dist.broadcast(buffer, 0))


def shard_batches(batches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """This process's contiguous block of whole batches (sizes differ by at most one batch).

    Whole batches, so each image meets the same batch-mates as in one process and the results
    are bit-for-bit the same; contiguous, so joining the blocks in rank order gives input order.
    """
    n, r, w = len(batches), rank(), size()
    return list(batches[r * n // w : (r + 1) * n // w])


def first_batch(count: int) -> int:
    """Where this process's block starts among `count` batches (see shard_batches)."""
    return rank() * count // size()


def shard_epoch(order: np.ndarray) -> np.ndarray:
    """This process's share of an epoch's shuffled order, as DistributedSampler takes it.

    The order is padded to a multiple of the process count by repeating its first items, so
    every process takes the same number of steps; rank r then takes items r, r+W, r+2W, ...
    Step k of every process together covers items [k*B, (k+1)*B) of the padded order, the same
    images one process would take at step k with the same global batch size B.
    """
    w = size()
    if w == 1:
        return order
    padded = np.resize(order, -(-len(order) // w) * w)  # np.resize repeats from the start
    return padded[rank() :: w]


def per_process_batch(batch_size: int) -> int:
    """The global batch size split between the processes; it must divide evenly."""
    w = size()
    if batch_size % w:
        near = [n for n in (batch_size // w * w, (batch_size // w + 1) * w) if n > 0]
        raise UsageError(
            f"--batch-size {batch_size} is the global batch and must divide among {w} processes "
            f"(try {' or '.join(map(str, near))})"
        )
    return batch_size // w


def process_seed(seed: int) -> int:
    """A per-process seed: rank 0 keeps `seed`, so one process draws exactly what it always did,
    while the others draw different noise for their different images."""
    r = rank()
    return seed if r == 0 else (seed + r * 0x9E3779B97F4A7C15) % (2**63)


class _TrainingLoss(torch.nn.Module):
    """DDP synchronises gradients through forward(); our models train through loss(batch)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.model.loss(batch)


def training_loss(model: torch.nn.Module, device: torch.device) -> Callable[[dict[str, Any]], dict[str, torch.Tensor]]:
    """model.loss, wrapped in DistributedDataParallel when there are several processes."""
    if not active():
        return model.loss
    from torch.nn.parallel import DistributedDataParallel

    # A 1-channel conv's weight gradient comes back with strides that differ from its bucket's
    # although the memory order is the same; DDP then warns about a copy that costs nothing here.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    # BatchNorm stays per process (SyncBatchNorm is refused on CPU); DDP's default buffer sync starts every
    # step from rank 0's running statistics, so rank 0's are the ones kept (docs/distributed.md). Left
    # unnamed: torch 2.14 deprecates broadcast_buffers and warns on every rank when it is passed.
    return DistributedDataParallel(_TrainingLoss(model), device_ids=ids)

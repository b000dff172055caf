"""The one place that decides device, dtype, autocast and seeds; nothing else calls .cuda()."""

from __future__ import annotations

import contextlib
import os
import random

import torch

from aecli import distributed
from aecli.errors import UsageError


def choose_device(name: str | None = None) -> torch.device:
    """`--device`, else $AE_DEVICE, else auto: cuda, then mps, then cpu.

    Under torchrun, plain `cuda` means cuda:LOCAL_RANK: one GPU per process.
    """
    name = (name or os.environ.get("AE_DEVICE") or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return _cuda()
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device '{name}' asked for, but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device '{name}' asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
        if device.index is None:
            device = _cuda()
    elif device.type == "mps" and not _mps_available():
        raise UsageError("device 'mps' asked for, but MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)")
    return device


def _cuda() -> torch.device:
    """Plain `cuda`: the current GPU; under torchrun, this process's own (cuda:LOCAL_RANK)."""
    if not distributed.active():
        return torch.device("cuda")
    if distributed.local_rank() >= torch.cuda.device_count():
        raise UsageError(
            f"LOCAL_RANK {distributed.local_rank()} has no GPU: only {torch.cuda.device_count()} here "
            "(start at most that many processes per node)"
        )
    return torch.device("cuda", distributed.local_rank())


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (fast, no loss scaling needed); full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    return batch.to(device, non_blocking=device.type == "cuda")


def seed_all(seed: int) -> None:
    """Seed every generator a training step draws from (noise, reparameterisation)."""
    random.seed(seed)
    torch.manual_seed(seed)


def step_seed(seed: int, epoch: int, step: int) -> int:
    """A seed per training step, so a run resumed mid-epoch draws what the whole run would."""
    return (seed * 1_000_003 + epoch * 100_003 + step) % (2**63)

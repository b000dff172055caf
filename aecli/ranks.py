"""Which process this is, as torchrun tells it through the environment: no torch needed.

Messages and writers ask `leader()` before any model is loaded (`ae info` never loads torch);
distributed.py re-exports these beside the collectives that do need torch.
"""

from __future__ import annotations

import os

from aecli.errors import UsageError


def size() -> int:
    """How many processes share the work: WORLD_SIZE under torchrun, else 1."""
    return max(1, _env_int("WORLD_SIZE", 1))


def active() -> bool:
    return size() > 1


def rank() -> int:
    return _env_int("RANK", 0) if active() else 0


def local_rank() -> int:
    """This process's place on its machine: which GPU it takes."""
    return _env_int("LOCAL_RANK", 0) if active() else 0


def leader() -> bool:
    """Rank 0 prints, shows progress and writes the shared outputs."""
    return rank() == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise UsageError(f"${name} is '{value}', not a whole number (is this a torchrun environment?)") from None

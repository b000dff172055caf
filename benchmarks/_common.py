"""Helpers the benchmark scripts share: timing a command and reading Fashion-MNIST into memory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aecli.data.named import fashion_mnist_dirs  # noqa: E402
from aecli.data.arrays import read_idx_array  # noqa: E402


@contextmanager
def workdir(given: Path | None, prefix: str) -> Iterator[Path]:
    """Where a benchmark keeps its files: the folder given (kept afterwards), or a temporary one."""
    work = (given or Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        if not given:
            shutil.rmtree(work, ignore_errors=True)


def fashion_mnist(split: str = "train") -> tuple[torch.Tensor, np.ndarray]:
    """(N, 1, 28, 28) float pixels in [0, 1] and labels, from the local copy `ae` itself uses."""
    prefix = "train" if split == "train" else "t10k"
    for d in fashion_mnist_dirs():
        images = d / f"{prefix}-images-idx3-ubyte.gz"
        if images.is_file():
            x = torch.from_numpy(read_idx_array(images).copy()).float().div_(255)[:, None]
            return x, read_idx_array(d / f"{prefix}-labels-idx1-ubyte.gz").copy()
    sys.exit("Fashion-MNIST not found: apt-get install -y dataset-fashion-mnist")


def ae(*args: str, cwd: Path | None = None) -> float:
    """Run `ae ARGS` as a user would (a new process) and return its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "aecli", *map(str, args)], cwd=cwd, check=True)
    return time.perf_counter() - started

"""What the denoising benchmarks share: running `ae` quietly and printing a PSNR/SSIM table."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def ae_silent(*args: object) -> float:
    """`ae ARGS` in a new process, its stdout (the quality table we print ourselves) dropped; wall seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "aecli", *map(str, args)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def report_means(path: Path) -> dict[str, float]:
    """Mean of each column of an `ae denoise --report` CSV."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        k: float(np.mean([float(r[k]) for r in rows]))
        for k in ("psnr_before", "psnr_after", "ssim_before", "ssim_after")
    }


def print_table(title: str, rows: list[tuple[str, float, float | None, float | None, float | None]]) -> None:
    """method, PSNR, SSIM, training seconds, denoising seconds."""
    print(f"\n{title}")
    print(f"{'method':50s} {'PSNR dB':>8s} {'SSIM':>7s} {'train s':>8s} {'denoise s':>9s}")

    def cell(v: float | None, fmt: str, width: int) -> str:
        return f"{v:{width}{fmt}}" if v is not None else " " * width

    for name, p, s, train_s, run_s in rows:
        print(f"{name:50s} {p:8.2f} {cell(s, '.4f', 7)} {cell(train_s, '.1f', 8)} {cell(run_s, '.2f', 9)}")

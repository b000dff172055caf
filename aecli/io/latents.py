"""Latent vectors on disk and in pipes: .npy (the default), .npz, CSV and JSON lines.

Everything written here loads with plain numpy (`numpy.load`, no pickle), from a file or a pipe.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import IO

import numpy as np

from aecli.errors import InputError, UsageError
from aecli.io.files import atomic_output, leader_writes, write_stdout
from aecli.io.tabular import csv_lines, json_line

FORMATS = ("npy", "npz", "csv", "jsonl")
BINARY = ("npy", "npz")


def choose_format(out: Path | None, fmt: str | None) -> str:
    """--format if given, else the output's suffix, else npy."""
    if fmt:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format '{fmt}' (use {', '.join(FORMATS)})")
        return fmt
    suffix = out.suffix.lstrip(".").lower() if out else ""
    return suffix if suffix in FORMATS else "npy"


def check_destination(out: Path | None, fmt: str) -> None:
    """Binary latents never go to a terminal: fail before the work, with what to do instead."""
    if out is None and fmt in BINARY and sys.stdout.isatty():
        raise UsageError(
            f"refusing to write binary .{fmt} to a terminal; use -o FILE or redirect: ae encode ... > z.{fmt}"
        )


@leader_writes
def write(
    vectors: np.ndarray, sources: list[str], out: Path | None, fmt: str, shape: tuple[int, ...] = ()
) -> None:
    """Write latents to `out` atomically, or to stdout when out is None.

    A spatial latent (C, h, w) is written flattened, one row per image; .npz records its shape
    as `latent_shape` (rows.reshape(-1, *latent_shape) gives the maps back).
    """
    if out is None:
        check_destination(out, fmt)
        buffer = io.BytesIO()  # all of it first: write_stdout turns a closed pipe into BrokenPipeError
        _write(buffer, vectors, sources, fmt, shape)
        write_stdout(buffer.getvalue())
        return
    with atomic_output(out) as f:
        _write(f, vectors, sources, fmt, shape)


def _write(f: IO[bytes], vectors: np.ndarray, sources: list[str], fmt: str, shape: tuple[int, ...]) -> None:
    if fmt in BINARY:  # through memory: np.save asks a real file its position, zip seeks; a pipe can do neither
        buffer = io.BytesIO()
        if fmt == "npy":
            np.save(buffer, vectors)
        else:
            spatial = {"latent_shape": np.array(shape, dtype=np.int64)} if len(shape) > 1 else {}
            np.savez(buffer, latents=vectors, paths=np.array(sources, dtype=str), **spatial)
        f.write(buffer.getbuffer())
    elif fmt == "csv":
        columns = ["path", *(f"z{i}" for i in range(vectors.shape[1]))]
        for line in csv_lines(columns, ([s, *map(str, row)] for s, row in zip(sources, vectors))):
            f.write(line.encode())
    else:
        for source, row in zip(sources, vectors):
            f.write(json_line({"path": source, "latent": _exact(row)}, rounded=False).encode())


def _exact(row: np.ndarray) -> list:
    """Each number as the shortest decimal that reads back as the same float32 (str of a numpy
    float32 gives it); code numbers as they are."""
    return row.tolist() if row.dtype.kind in "iu" else [float(str(v)) for v in row]


@leader_writes
def write_index(path: Path, sources: list[str]) -> None:
    """One source per line, row by row: a file path, or `array#row`."""
    with atomic_output(path) as f:
        f.write("".join(f"{s}\n" for s in sources).encode())


def read(source: str) -> np.ndarray:
    """Latent rows (N, D) from a .npy or .npz file, or from stdin (`-`) in either format: float32,
    or int64 where they are whole numbers (a VQ-VAE's codes)."""
    name = "stdin" if source == "-" else source
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as e:
        raise InputError(f"{name}: {e.strerror or e}") from None
    if not data:
        raise InputError(f"{name}: empty; expected latents as .npy or .npz (from ae encode)")
    if not data.startswith((b"\x93NUMPY", b"PK")):  # numpy would call any other bytes pickled data
        raise InputError(f"{name}: not a .npy or .npz array (ae decode takes what ae encode writes as npy or npz)")
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{name}: not a .npy or .npz array ({str(e).splitlines()[0] if str(e) else e})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            key = "latents" if "latents" in loaded.files else None
            candidates = [k for k in loaded.files if loaded[k].ndim == 2]
            if key is None and len(candidates) != 1:
                raise InputError(f"{name}: no 'latents' array in the archive (arrays: {', '.join(loaded.files)})")
            loaded = loaded[key or candidates[0]]
    if loaded.ndim == 1:
        loaded = loaded[None]
    if loaded.ndim != 2 or loaded.dtype.kind not in "fiu":
        raise InputError(
            f"{name}: expected a 2-D array of numbers (rows of latents), got {loaded.dtype} {loaded.shape}"
        )
    if not np.isfinite(loaded).all():
        raise InputError(f"{name}: latents hold NaN or infinite values")
    return loaded.astype(np.int64 if loaded.dtype.kind in "iu" else np.float32)

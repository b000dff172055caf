"""Streaming inference: batches made ahead in a thread, output files written by a background writer."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from conftest import blobs, write_pngs

from aecli.data.prefetch import ahead
from aecli.io.writer import Writer


@pytest.fixture
def nested(tmp_path):
    """Two folders of PNGs, so outputs mirror into subdirectories."""
    write_pngs(tmp_path / "in" / "a", blobs(5, seed=1))
    write_pngs(tmp_path / "in" / "b", blobs(5, seed=2))
    return tmp_path / "in"


def pngs(folder):
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


def test_encode_gives_the_same_rows_made_ahead_in_a_thread_or_in_worker_processes(run, models, png_dir):
    for workers in ("0", "2"):
        result = run("encode", png_dir, "-m", models["ae"], "-o", f"w{workers}.npy", "--workers", workers,
                     "--batch-size", "5", "-q")  # fmt: skip
        assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(np.load("w0.npy"), np.load("w2.npy"))


def test_denoise_writes_the_same_files_with_workers_0_and_2(run, models, nested, tmp_path):
    for workers in ("0", "2"):
        result = run("denoise", nested, "-m", models["dae"], "-o", f"out{workers}", "--workers", workers,
                     "--batch-size", "3", "--add-noise", "0.1", "--save-noisy", f"noisy{workers}", "-q")  # fmt: skip
        assert result.exit_code == 0, result.stderr
    for kind in ("out", "noisy"):
        first, second = pngs(tmp_path / f"{kind}0"), pngs(tmp_path / f"{kind}2")
        assert sorted(first) == [f"{d}/img{i:03d}.png" for d in "ab" for i in range(5)]
        assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)
    assert not list(tmp_path.rglob(".*.tmp"))


def test_score_maps_are_the_same_with_workers_0_and_2(run, models, mvtec, tmp_path):
    for workers in ("0", "2"):
        result = run("score", mvtec, "-m", models["ae"], "--maps", f"maps{workers}", "--maps-all", "--workers", workers, "-q")
        assert result.exit_code == 0, result.stderr
    first, second = pngs(tmp_path / "maps0"), pngs(tmp_path / "maps2")
    assert len(first) == 8 and first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_write_that_fails_in_the_writer_is_one_line_and_exit_1(run, models, nested, tmp_path, workers):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b").write_text("a file where a folder of outputs goes")
    result = run("denoise", nested, "-m", models["dae"], "-o", "out", "--workers", workers, "--batch-size", "2", "-q")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "out/b" in result.stderr and "Traceback" not in result.stderr
    assert len(list((tmp_path / "out" / "a").glob("*.png"))) == 5  # written before the failure, whole
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_map_that_cannot_be_written_is_one_line_and_exit_1(run, models, mvtec, tmp_path):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "noise").write_text("in the way")
    result = run("score", mvtec, "-m", models["ae"], "--maps", "maps", "--maps-all", "--workers", "0", "-q")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "maps/noise" in result.stderr


def test_a_bad_image_stops_encoding_in_one_line_or_is_skipped(run, models, png_dir):
    (png_dir / "img020.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    result = run("encode", png_dir, "-m", models["ae"], "-o", "z.npy", "--workers", "0", "--batch-size", "4")
    assert result.exit_code == 1 and "img020.png" in result.stderr and result.stderr.count("\n") == 1
    skipped = run("encode", png_dir, "-m", models["ae"], "-o", "z.npy", "--workers", "0", "--skip-bad", "-q")
    assert skipped.exit_code == 0 and len(np.load("z.npy")) == 23


def test_ahead_keeps_order_raises_in_place_and_stops_its_thread_when_left():
    assert list(ahead(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad batch")

    made = ahead(failing())
    assert next(made) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(made)

    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    made = ahead(endless(), depth=2)
    assert [next(made) for _ in range(3)] == [0, 1, 2]
    made.close()
    assert closed.is_set() and not any(t.name == "aecli-prefetch" for t in threading.enumerate())


def test_the_writer_keeps_order_and_raises_the_first_failure_in_the_caller():
    done = []
    with Writer(depth=2) as writer:
        for i in range(20):
            writer.submit(done.append, i)
    assert done == list(range(20))

    def fail(i):
        if i == 3:
            raise OSError(28, "No space left on device")
        done.append(i)

    done.clear()
    with pytest.raises(OSError, match="No space left"):
        with Writer(depth=1) as writer:
            for i in range(10):
                writer.submit(fail, i)
    assert done == [0, 1, 2]  # nothing after the failure is written

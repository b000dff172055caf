"""Atomic writes behave like a careful Unix tool's: the target's mode kept, links written through,
the rename made durable, the process umask never touched (other threads read it), and a device
or a pipe written in place, never renamed over."""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aecli.errors import OutputError
from aecli.io.files import atomic_output, write_bytes_atomic


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_an_existing_0600_target_keeps_0600(tmp_path):
    out = tmp_path / "secret.csv"
    out.write_bytes(b"old")
    out.chmod(0o600)
    write_bytes_atomic(out, b"new")
    assert out.read_bytes() == b"new"
    assert mode(out) == 0o600


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the umask is read from /proc")
def test_a_new_file_gets_0666_less_the_umask(tmp_path):
    previous = os.umask(0o027)  # the test may set it; the code under test may not
    try:
        write_bytes_atomic(tmp_path / "new.csv", b"data")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "new.csv") == 0o640


def test_the_umask_is_never_changed(tmp_path, monkeypatch):
    def no_umask(mask):
        raise AssertionError("os.umask changes the mask for every thread")

    monkeypatch.setattr(os, "umask", no_umask)
    write_bytes_atomic(tmp_path / "new.csv", b"data")
    write_bytes_atomic(tmp_path / "new.csv", b"again")
    assert (tmp_path / "new.csv").read_bytes() == b"again"


def test_a_symlinked_output_stays_a_link_and_its_target_gets_the_content(tmp_path):
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "scores.csv"
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "scores.csv"
    link.symlink_to(target)
    write_bytes_atomic(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o640
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["scores.csv", "scores.csv", "store"]  # no temp left


def test_a_dangling_symlink_is_written_where_it_points(tmp_path):
    link = tmp_path / "out.csv"
    link.symlink_to("made.csv")  # relative, as links often are
    write_bytes_atomic(link, b"data")
    assert link.is_symlink()
    assert (tmp_path / "made.csv").read_bytes() == b"data"


def test_a_symlink_loop_is_refused_and_left_alone(tmp_path):
    loop = tmp_path / "loop.csv"
    loop.symlink_to("loop.csv")
    with pytest.raises(OutputError, match="loop.csv"):
        write_bytes_atomic(loop, b"data")
    assert loop.is_symlink()
    assert [p.name for p in tmp_path.iterdir()] == ["loop.csv"]


def test_the_directory_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_bytes(b"old")
    opened, synced = {}, []
    real_open, real_fsync = os.open, os.fsync

    def recording_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_DIRECTORY:
            opened[fd] = Path(path)
        return fd

    def recording_fsync(fd):
        if fd in opened:  # what a crash now would keep: the rename must already be done
            synced.append((opened[fd], out.read_bytes()))
        return real_fsync(fd)

    monkeypatch.setattr(os, "open", recording_open)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_bytes_atomic(out, b"new")
    assert synced == [(Path(os.path.realpath(tmp_path)), b"new")]


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path):
    out = tmp_path / "out.csv"
    out.write_bytes(b"old")
    out.chmod(0o600)
    with pytest.raises(RuntimeError):
        with atomic_output(out) as f:
            f.write(b"half")
            raise RuntimeError("interrupted")
    assert out.read_bytes() == b"old" and mode(out) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


@pytest.fixture
def pipe() -> Iterator[tuple[int, Path]]:
    """A pipe's read end, and its write end named as bash names `>(...)`: /dev/fd/N."""
    if not Path("/dev/fd").is_dir():
        pytest.skip("no /dev/fd on this system")
    read, write = os.pipe()
    yield read, Path(f"/dev/fd/{write}")
    for fd in (read, write):
        with contextlib.suppress(OSError):
            os.close(fd)


def drained(read: int, name: Path) -> bytes:
    os.close(int(name.name))  # the last writer gone, the reader sees the end
    with os.fdopen(read, "rb") as f:
        return f.read()


def test_a_pipe_is_written_in_place(pipe):
    read, name = pipe
    write_bytes_atomic(name, b"through the pipe")
    assert stat.S_ISFIFO(os.stat(name).st_mode)
    assert drained(read, name) == b"through the pipe"


def test_latents_go_into_a_pipe_as_npy(run, models, pipe, tmp_path):
    read, name = pipe
    np.save(tmp_path / "x.npy", np.zeros((3, 16, 16), np.uint8))
    result = run("encode", "x.npy", "-m", models["ae"], "-o", name)
    assert result.exit_code == 0, result.stderr
    assert np.load(io.BytesIO(drained(read, name))).shape[0] == 3


def test_training_into_a_pipe_is_refused_before_any_work(run, pipe, tmp_path):
    read, name = pipe
    np.save(tmp_path / "x.npy", np.zeros((8, 16, 16), np.uint8))
    result = run("train", "x.npy", "--epochs", "1", "-o", name)
    assert result.exit_code == 1 and "saved to a file" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert drained(read, name) == b""

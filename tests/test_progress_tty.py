"""The progress bar as a person at a terminal sees it: drawn on stderr, never on stdout.

Each test runs the real `ae` with one stream on a pseudo-terminal and the other in a file, as
`ae encode ./photos -m ae.safetensors > z.npy` does, and reads the terminal while `ae` runs.
"""

from __future__ import annotations

import io
import os
import re
import select
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import blobs, write_pngs

if sys.platform == "win32":
    pytest.skip("pseudo-terminals (the pty module) are POSIX only", allow_module_level=True)

import fcntl
import pty
import termios

# What would make rich decide for itself instead of asking the terminal; CI sets some of them.
RICH_OVERRIDES = ("CI", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES")
ESCAPE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
IMAGES = 24


def on_terminal(args: list[str], cwd, tty: str = "stderr") -> tuple[int, bytes, bytes]:
    """Run `ae ARGS` with `tty` ("stderr" or "stdout") on a 100-column pseudo-terminal and the
    other stream in a file; returns (exit code, what the terminal got, what the file got)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in RICH_OVERRIDES and not k.startswith("JUPYTER")}
    env["TERM"] = "xterm-256color"
    with open(cwd / f"{tty}.other", "w+b") as other:
        streams = {"stdout": other, "stderr": other, tty: follower}
        process = subprocess.Popen(
            [sys.executable, "-m", "aecli", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, **streams
        )
        os.close(follower)
        terminal = _drain(leader, process)
        other.seek(0)
        return process.wait(timeout=60), terminal, other.read()


def _drain(leader: int, process: subprocess.Popen, limit: float = 120) -> bytes:
    """Read the terminal until every writer has closed it: read as it comes, or a full pty buffer
    would stall `ae` mid-run."""
    chunks, deadline = [], time.monotonic() + limit
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                process.kill()
                pytest.fail(f"ae did not finish within {limit:g} s")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO on Linux: the other side is closed and drained
                break
            if not chunk:  # macOS says the same with an empty read
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    return b"".join(chunks)


def frames(terminal: bytes) -> list[str]:
    """The lines the terminal showed, one per redraw, escapes stripped."""
    text = ESCAPE.sub(b"", terminal).decode("utf-8", "replace")
    return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]


def bar_frames(terminal: bytes, label: str) -> list[str]:
    return [line for line in frames(terminal) if line.startswith(label) and "img/s" in line]


@pytest.fixture
def pngs(tmp_path):
    write_pngs(tmp_path / "pngs", blobs(IMAGES, seed=3))
    return tmp_path / "pngs"


def test_encode_draws_its_bar_on_stderr_and_writes_only_the_npy_to_stdout(models, pngs, tmp_path):
    code, terminal, stdout = on_terminal(["encode", "pngs", "-m", str(models["ae"]), "--batch-size", "8"], tmp_path)
    assert code == 0, terminal.decode(errors="replace")
    bars = bar_frames(terminal, "encode")
    # Drawn as soon as the images are counted (rich redraws on add_task), before the first batch
    # is read: no rate and no time left yet, rather than a guess.
    assert re.search(rf"\b0/{IMAGES} +- img/s +\S+ +eta -:--:--$", bars[0]), bars
    assert re.search(rf"\b{IMAGES}/{IMAGES} +[\d,]+ img/s +\d+:\d\d:\d\d +eta 0:00:00$", bars[-1]), bars
    assert f"encoded {IMAGES} images to stdout" in " ".join(frames(terminal))
    latents = np.load(io.BytesIO(stdout))
    assert latents.shape[0] == IMAGES and latents.dtype == np.float32
    again = io.BytesIO()
    np.save(again, latents)
    assert again.getvalue() == stdout  # the .npy and nothing else: not a byte of bar


@pytest.mark.parametrize("out", [["-o", "scores.csv"], []], ids=["to-file", "to-stdout"])
def test_score_draws_its_bar_on_stderr_and_keeps_stdout_to_the_scores(models, pngs, tmp_path, out):
    code, terminal, stdout = on_terminal(["score", "pngs", "-m", str(models["ae"]), *out], tmp_path)
    assert code == 0, terminal.decode(errors="replace")
    bars = bar_frames(terminal, "score")
    assert f"{IMAGES}/{IMAGES}" in bars[-1], bars
    csv = (tmp_path / "scores.csv").read_bytes() if out else stdout
    assert out == [] or stdout == b""
    assert b"\x1b" not in csv and b"img/s" not in csv
    lines = csv.decode().splitlines()
    assert lines[0] == "path,score,threshold,anomalous" and len(lines) == IMAGES + 1


def test_training_draws_its_bar_on_stderr(tmp_path):
    np.save(tmp_path / "blobs.npy", blobs(16))
    args = ["train", "blobs.npy", "--epochs", "1", "--batch-size", "8", "-o", "m.safetensors"]
    code, terminal, stdout = on_terminal(args, tmp_path)
    assert code == 0, terminal.decode(errors="replace")
    assert bar_frames(terminal, "epoch 1/1"), frames(terminal)
    assert stdout == b""


def test_quiet_draws_nothing(models, pngs, tmp_path):
    code, terminal, stdout = on_terminal(["encode", "pngs", "-m", str(models["ae"]), "-q"], tmp_path)
    assert code == 0, terminal.decode(errors="replace")
    assert terminal == b""
    assert np.load(io.BytesIO(stdout)).shape[0] == IMAGES


def test_no_bar_when_only_stdout_is_a_terminal(models, pngs, tmp_path):
    """`ae score ... 2> log`: the table on the terminal, and neither the bar nor colour in the log."""
    code, terminal, stderr = on_terminal(["score", "pngs", "-m", str(models["ae"])], tmp_path, tty="stdout")
    assert code == 0, stderr
    assert b"img/s" not in terminal and b"img/s" not in stderr and b"\x1b" not in stderr
    assert re.search(rf"flagged \d+ of {IMAGES} images", stderr.decode())
    assert "anomalous" in " ".join(frames(terminal))  # the score table's header

"""Every exit code in docs/reliability.md comes out of a real command, and the table lists exactly those."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import blobs

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"


def documented_codes() -> set[int]:
    table = DOC.read_text().split("## Exit codes", 1)[1].split("\n\n", 1)[0]
    return {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.M)}


def test_each_documented_exit_code_is_what_a_command_returns(run, models, tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", blobs(8))
    seen = {
        0: run("encode", "x.npy", "-m", models["ae"], "-o", "z.npy").exit_code,
        1: run("encode", "missing.npy", "-m", models["ae"], "-o", "z.npy").exit_code,
        2: run("train", "x.npy", "--variant", "gan").exit_code,
        3: run("score", "x.npy", "-m", models["ae"], "--threshold", "0", "--fail-on-anomaly", "-q").exit_code,
    }

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("aecli.infer.encode", interrupted)
    ctrl_c = run("encode", "x.npy", "-m", models["ae"], "-o", "z.npy")
    seen[130] = ctrl_c.exit_code
    assert ctrl_c.stderr.strip() == "Error: interrupted"

    # the reader of stdout goes away after one byte: a real pipe, as `ae encode ... | head -c 1`
    np.save(tmp_path / "many.npy", blobs(4000))  # 500 KB of latents: more than a pipe buffers
    proc = subprocess.Popen(
        [sys.executable, "-m", "aecli", "encode", "many.npy", "-m", models["ae"], "-q"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.read(1)
    proc.stdout.close()
    seen[141] = proc.wait(timeout=60)
    assert proc.stderr.read() == b""  # quiet, as a tool killed by SIGPIPE

    assert seen == {code: code for code in seen}, seen
    assert documented_codes() == set(seen)


def test_a_usage_error_is_one_line_that_says_where_help_is(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "aecli", "encode", "x.npy", "--bogus"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: No such option: --bogus") and proc.stderr.count("\n") == 1, proc.stderr
    assert "(see ae encode -h)" in proc.stderr
    if Path("/dev/full").exists():  # help onto a full disk: one line too, not a traceback
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, "-m", "aecli", "score", "-h"], stdout=full, stderr=subprocess.PIPE)
        assert proc.returncode == 1 and proc.stderr.decode().count("\n") == 1, proc.stderr


def test_inputs_that_all_fail_to_read_are_an_error_not_an_empty_result(run, models, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_text("not a png")
    (tmp_path / "bad" / "b.png").write_bytes(b"")
    for args in (["encode", "-o", "z.npy"], ["score", "--metric", "mse"], ["denoise", "-o", "out"]):
        result = run(args[0], "bad", "-m", models["ae"], "--skip-bad", "-q", *args[1:])
        assert result.exit_code == 1 and result.stderr == "Error: no readable images in bad\n", (args, result.stderr)
    assert not (tmp_path / "z.npy").exists() and not (tmp_path / "out").exists()

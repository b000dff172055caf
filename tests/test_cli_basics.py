"""Start-up promises: a fast --help that never imports torch, `python -m aecli`, clean errors."""

from __future__ import annotations

import os
import pty
import json
import subprocess
import sys

from aecli import __version__
from aecli.models import list_variants


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, aecli.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_m_aecli_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "aecli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"ae {__version__}"


def test_help_lists_the_commands(run):
    result = run("--help")
    assert result.exit_code == 0
    for name in ("train", "encode", "decode", "denoise", "sample", "info"):
        assert name in result.stdout


def test_unknown_command_is_a_usage_error_without_traceback():
    out = subprocess.run([sys.executable, "-m", "aecli", "no-such-command"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "No such command" in out.stderr


def test_train_help_offers_exactly_the_registered_variants(run):
    help_text = run("train", "--help").stdout
    for name in list_variants():
        assert f"{name}: " in help_text
    assert run("train", "sample", "--variant", "gan").stderr.endswith(f"(known: {', '.join(list_variants())})\n")


def _stderr_on_a_terminal(*args: str, **env: str) -> str:
    """Run `ae ARGS` with stderr on a pseudo-terminal; what it printed there."""
    leader, follower = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    subprocess.run(
        [sys.executable, "-m", "aecli", *args], stderr=follower, stdout=subprocess.DEVNULL,
        env={**environment, "TERM": "xterm-256color", **env},
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the other side is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return b"".join(chunks).decode()


def test_colour_only_on_a_terminal_and_never_with_no_color():
    error = ["info", "missing.safetensors"]  # fails before torch is imported: a quick test
    assert "\x1b[" in _stderr_on_a_terminal(*error)
    assert "\x1b[" not in _stderr_on_a_terminal(*error, NO_COLOR="1")
    piped = subprocess.run([sys.executable, "-m", "aecli", *error], capture_output=True, text=True)
    assert piped.returncode == 1 and "\x1b[" not in piped.stderr and piped.stderr.startswith("Error: ")


def test_shell_completion_scripts_are_offered(run):
    result = run("--show-completion", "bash")
    assert result.exit_code == 0 and "_ae_completion" in result.stdout and "complete" in result.stdout


def test_scoring_a_png_imports_neither_torchvision_nor_torch_dynamo(models, tmp_path):
    """Both cost seconds of start-up that one-shot commands on PNGs and arrays never need."""
    from tests.conftest import blobs, write_pngs

    write_pngs(tmp_path / "in", blobs(2))
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from aecli.cli import app\n"
        f"result = CliRunner().invoke(app, ['score', {str(tmp_path / 'in')!r}, '-m', {str(models['ae'])!r}, '-q'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print('torchvision' in sys.modules, 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_info_reads_a_model_file_without_importing_torch(models):
    """`ae info` answers from the file's header: no torch, so it takes a blink, not seconds."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from aecli.cli import app\n"
        f"result = CliRunner().invoke(app, ['info', {str(models['vae'])!r}, '--json'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print('torch' in sys.modules)\n"
        "print(result.stdout)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, shown = out.stdout.split("\n", 1)
    assert imported == "False"
    assert json.loads(shown)["capabilities"]["sample"] is True

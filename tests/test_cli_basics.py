"""Start-up promises: a fast --help that never imports torch, `python -m aecli`, clean errors."""

from __future__ import annotations

import subprocess
import sys

from aecli import __version__
from aecli.config import VARIANTS
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


def test_the_config_names_exactly_the_registered_variants():
    assert tuple(list_variants()) == VARIANTS

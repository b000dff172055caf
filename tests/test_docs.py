"""The docs stay true: the command reference is current, every command is documented with an
example, links lead somewhere, and the Python API page runs as written."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import typer.main

from aecli.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("**/*.md"))
REGENERATE = "run python scripts/gen_cli_docs.py"


@pytest.fixture(scope="module")
def gen():
    """scripts/gen_cli_docs.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def visible_commands() -> dict:
    group = typer.main.get_command(app)
    return {name: command for name, command in group.commands.items() if not command.hidden}


def test_cli_md_is_current(gen):
    current = (ROOT / "docs" / "cli.md").read_text()
    assert current == gen.render(), f"docs/cli.md is out of date: {REGENERATE}"


def test_check_flag_reports_a_stale_page(gen, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    monkeypatch.setattr(gen, "TARGET", tmp_path / "docs" / "cli.md")
    assert gen.main(["--check"]) == 1  # missing counts as stale
    assert capsys.readouterr().err == f"docs/cli.md is out of date: {REGENERATE}\n"
    (tmp_path / "docs").mkdir()
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0
    (tmp_path / "docs" / "cli.md").write_text(gen.render() + "edited by hand\n")
    assert gen.main(["--check"]) == 1


def test_every_command_is_documented_with_a_summary_and_an_example():
    page = (ROOT / "docs" / "cli.md").read_text()
    commands = visible_commands()
    assert commands, "no commands registered"
    missing = [name for name in commands if f"\n## ae {name}\n" not in page]
    assert not missing, f"not in docs/cli.md: {', '.join(missing)} ({REGENERATE})"
    problems = []
    for name, command in commands.items():
        text = (command.help or "").strip()
        summary = text.split("\n\n")[0]
        if not summary or "\n" in summary:
            problems.append(f"ae {name}: its docstring does not start with a one-line summary")
        if not re.search(r"^\s*\x08\s*\n\s*Examples?:\s*\n\s+ae ", text, re.M):
            problems.append(f"ae {name}: no `Examples:` section (under a \\b line) with an `ae ...` line")
    assert not problems, "\n".join(problems)


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings (duplicates get -1, -2, ...)."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", FENCE.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


@pytest.mark.parametrize("page", [ROOT / "README.md", *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page):
    text = page.read_text()
    broken = []
    for target in LINK.findall(INLINE_CODE.sub("", FENCE.sub("", text))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
            continue
        path, _, fragment = target.partition("#")
        where = (page.parent / path) if path else page
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif fragment and where.suffix == ".md" and fragment not in anchors(where.read_text()):
            broken.append(f"{target}: no heading #{fragment} in {where.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_python_api_page_runs(tmp_path, monkeypatch):
    """Every ```python block of docs/python-api.md, in order, in one namespace, in an empty directory."""
    text = (ROOT / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert blocks, "docs/python-api.md has no python blocks"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AE_DEVICE", raising=False)
    namespace: dict = {"__name__": "python_api_md"}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"docs/python-api.md (python block {number})", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"docs/python-api.md, python block {number} fails: {type(e).__name__}: {e}\n{block}")

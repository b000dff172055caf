"""Write docs/cli.md from the real `--help` of `ae` and each of its commands.

    python scripts/gen_cli_docs.py           # rewrite docs/cli.md
    python scripts/gen_cli_docs.py --check   # exit 1 if docs/cli.md is out of date

Commands are enumerated from the Typer app, so a new command appears without touching this
script. Help is rendered at a fixed width, so the page does not depend on the terminal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import typer.main

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "cli.md"
# What `ae CMD --help` prints on any terminal of 100 columns or more: the app caps help at
# max_content_width=100, and click keeps 2 columns spare.
WIDTH = 98


def command_helps(app: typer.Typer | None = None) -> list[tuple[str, str]]:
    """(`ae`, its help), then (`ae NAME`, its help) for every visible command, in registration order."""
    if app is None:
        from aecli.cli import app
    group = typer.main.get_command(app)
    settings = {**group.context_settings, "terminal_width": WIDTH}
    root = group.context_class(group, info_name="ae", **settings)
    helps = [("ae", group.get_help(root))]
    for name, command in group.commands.items():
        if command.hidden:
            continue
        ctx = command.context_class(command, info_name=name, parent=root, **settings)
        helps.append((f"ae {name}", command.get_help(ctx)))
    return helps


def anchor(title: str) -> str:
    """The anchor GitHub gives a `## title` heading made of words and spaces."""
    return title.lower().replace(" ", "-")


def render(app: typer.Typer | None = None) -> str:
    """The whole of docs/cli.md."""
    helps = command_helps(app)
    lines = [
        "# Command reference",
        "",
        "Generated from `--help` by `python scripts/gen_cli_docs.py`; do not edit by hand.",
        "",
    ]
    lines += [f"- [{title}](#{anchor(title)})" for title, _ in helps]
    for title, text in helps:
        lines += ["", f"## {title}", "", "```text", text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    relative = TARGET.relative_to(ROOT)
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{relative} is out of date: run python scripts/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {relative}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`ae demo`: one tiny tour (--quick) whose report must hold together, rerun safely, and reproduce."""

from __future__ import annotations

import html
import re
import shlex
from html.parser import HTMLParser
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from aecli.report import demo
from aecli.cli import app
from aecli.errors import AecliError

COMMANDS = typer.main.get_command(app).commands


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    """The quick tour, run once through the real CLI: (folder, result)."""
    out = tmp_path_factory.mktemp("tour") / "demo-out"
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "--quick"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out, result


class Page(HTMLParser):
    """What a validity check needs: links, images, scripts, and whether every tag was closed."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.links, self.images, self.tags, self.open, self.errors = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs["src"])
            assert attrs.get("alt"), "every image has alt text"
        if tag == "a":
            self.links.append(attrs["href"])
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")


def commands_in(markdown: str) -> list[list[str]]:
    blocks = re.findall(r"```sh\n(.*?)```", markdown, re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.strip()]


def test_the_tour_reports_each_step_and_prints_the_report_paths(tour):
    out, result = tour
    assert result.stdout.splitlines() == [str(out / "index.html"), str(out / "report.md")]
    steps = len(demo.plan(demo.QUICK))
    for k in range(1, steps + 1):
        assert f"[{k}/{steps}] " in result.stderr
    assert "PSNR" in result.stderr and "AUROC" in result.stderr
    assert "6 defect regions in 12 images; pixel AUROC" in result.stderr  # the texture's masks, found and used
    assert (out / demo.MARKER).is_file()


def test_the_page_is_self_contained_and_every_picture_exists(tour):
    out, _ = tour
    text = (out / "index.html").read_text()
    page = Page()
    page.feed(text)
    page.close()
    assert text.startswith("<!DOCTYPE html>")
    assert not page.errors and not page.open
    assert "script" not in page.tags
    assert not re.search(r"(src|href)=\"(https?:|//|/)", text), "only relative links"
    assert page.images and len(page.images) == len(set(page.images))
    for target in page.images + page.links:
        assert (out / target).is_file(), target
    expected = {"dae-preview.png", "denoised.png", "vae-samples.png", "cvae-samples.png"}
    assert expected <= set(page.images)
    assert sum(src.startswith("heatmaps/") for src in page.images) == demo.HEATMAPS
    assert sum(src.startswith("defect-maps/scratch/") for src in page.images) == demo.SCRATCH_MAPS


def test_the_markdown_report_shows_the_same_pictures_and_commands(tour):
    out, _ = tour
    markdown, html_text = (out / "report.md").read_text(), (out / "index.html").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    page = Page()
    page.feed(html_text)
    assert pictures == page.images
    commands = commands_in(markdown)
    assert len(commands) >= len(demo.plan(demo.QUICK))
    for args in commands:
        assert demo.command_line(args[1:]) in html.unescape(html_text)


def test_every_listed_command_is_a_valid_ae_command_line(tour):
    out, _ = tour
    for args in commands_in((out / "report.md").read_text()):
        assert args[0] == "ae" and args[1] in COMMANDS, args
        COMMANDS[args[1]].make_context(args[1], args[2:])  # raises on an unknown option or a bad value


def test_a_listed_command_reproduces_its_result(tour, monkeypatch):
    """The report's score command, run again in the folder, gives the same scores byte for byte."""
    out, _ = tour
    monkeypatch.chdir(out)
    line = next(a for a in commands_in((out / "report.md").read_text()) if "scores.csv" in a)
    again = ["again.csv" if a == "scores.csv" else a for a in line[1:]]
    if "--plot" in again:  # the picture is not what is compared
        i = again.index("--plot")
        del again[i : i + 2]
    result = CliRunner().invoke(app, again, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert (out / "again.csv").read_bytes() == (out / "scores.csv").read_bytes()
    (out / "again.csv").unlink()


def test_rerunning_into_the_same_folder_works_and_is_quiet_with_q(tour):
    out, _ = tour
    user_file = out / "my-notes.txt"
    user_file.write_text("mine")
    before = (out / "scores.csv").read_bytes()
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "--quick", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [str(out / "index.html"), str(out / "report.md")]
    assert (out / "scores.csv").read_bytes() == before  # same seed, same results (CPU)
    assert user_file.read_text() == "mine"


def test_a_foreign_folder_is_refused_and_left_alone(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not really")
    result = CliRunner().invoke(app, ["demo", "-o", str(foreign), "--quick"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "refusing to write into" in result.stderr and "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["holiday.jpg"]


def test_a_file_as_the_folder_is_refused(tmp_path):
    target = tmp_path / "report.txt"
    target.write_text("x")
    result = CliRunner().invoke(app, ["demo", "-o", str(target)], catch_exceptions=False)
    assert result.exit_code == 1
    assert "it is a file" in result.stderr


def test_a_failing_step_names_the_command_and_keeps_its_output(tmp_path):
    def runner(args):
        import sys

        print("Error: the disk is full", file=sys.stderr)
        return 1

    with pytest.raises(AecliError, match=r"step 1 \(training a denoising model\) failed: `ae train .*disk is full"):
        demo.run(tmp_path / "out", runner, quick=True)
    log = (tmp_path / "out" / "logs" / "1-denoiser.txt").read_text()
    assert log.startswith("$ ae train ") and "the disk is full" in log


def test_without_matplotlib_the_commands_draw_no_plots_and_the_report_says_so(tour):
    steps = demo.plan(demo.QUICK, plots=False)
    for step in steps:
        for args in step.commands:
            assert "--plot" not in args
        assert not any(p.path.endswith(("loss.png", "map.png", "hist.png")) for p in step.pictures)
    out, _ = tour
    made = demo.Demo(out, out / "index.html", out / "report.md", steps, 1.0, plots=False)
    assert "Plots skipped" in demo.page(made) and "Plots skipped" in demo.markdown(made)


def test_device_and_seed_reach_every_command_that_takes_them():
    for step in demo.plan(demo.FULL, device="cpu", seed=7):
        for args in step.commands:
            assert args[args.index("--device") + 1] == "cpu"
            if args[0] in ("train", "sample", "denoise"):
                assert args[args.index("--seed") + 1] == "7"


def test_help_has_a_summary_and_an_example_and_hides_quick():
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    assert "Example" in result.stdout and "ae demo" in result.stdout
    assert "--quick" not in result.stdout
    assert "demo" in CliRunner().invoke(app, ["--help"]).stdout


def test_the_makefile_runs_the_demo_command():
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "ae demo -o $(DEMO)" in recipe

"""The HTML reports in a real browser: `ae score --report` and `ae demo`, opened from file:// in
Debian's Chromium driven by Playwright. Every image loads, nothing is logged as an error, the
galleries hold what the CSV says, and every link leads to its file or section.

Skipped, with the reason, without Playwright or Chromium (.ci/run installs Chromium).
"""

from __future__ import annotations

import csv
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aecli.cli import app
from tests.conftest import blobs, write_pngs

try:
    from playwright import sync_api
except ImportError as e:
    pytest.skip(f"Playwright cannot be imported ({e}): pip install playwright", allow_module_level=True)
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        try:  # --no-sandbox: root (CI, containers) cannot use Chromium's sandbox
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except sync_api.Error as e:
            pytest.skip(f"Chromium at {CHROMIUM} does not start under Playwright: {str(e).splitlines()[0]}")
        yield launched
        launched.close()


class Visit:
    """A page opened from file:// with every console error and uncaught exception it produced."""

    def __init__(self, browser, path: Path):
        self.context = browser.new_context(accept_downloads=True)
        self.page = self.context.new_page()
        self.logged: list[str] = []
        self.failed: dict[str, str] = {}
        self.downloads: set[str] = set()
        self.page.on("console", lambda m: self.logged.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.logged.append(str(e)))
        self.page.on("requestfailed", lambda r: self.failed.setdefault(r.url, r.failure or "failed"))
        self.page.on("download", lambda d: self.downloads.add(d.url))
        response = self.page.goto(path.resolve().as_uri(), wait_until="load")
        assert response is not None and response.ok

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions, and failed requests other than downloads (which abort
        the navigation that started them, as they should)."""
        failed = [f"{url}: {why}" for url, why in self.failed.items() if url not in self.downloads]
        return self.logged + failed

    def images(self) -> list[tuple[str, int]]:
        """Each <img>'s src and naturalWidth (0: not loaded) once the page has loaded."""
        return self.page.eval_on_selector_all("img", "all => all.map(i => [i.getAttribute('src'), i.naturalWidth])")

    def count(self, selector: str) -> int:
        return self.page.locator(selector).count()

    def check_links(self) -> int:
        """Follow every link as the browser resolves it: sections exist, files open (or download whole)."""
        hrefs = self.page.eval_on_selector_all("a[href]", "all => all.map(a => [a.getAttribute('href'), a.href])")
        assert hrefs
        links = dict(hrefs)
        for raw in [h for h in links if h.startswith("#")]:  # on this page: the section is there
            assert self.count(f'[id="{raw[1:]}"]') == 1, f"no section {raw}"
        here, files = self.page.url, [h for h in links if not h.startswith("#")]
        for raw in sorted(files, key=lambda h: not h.endswith(".csv")):  # clicks first, while on this page
            url = links[raw]
            assert url.startswith("file://"), f"{raw} leaves the folder: {url}"
            target = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
            assert target.is_file(), f"{raw} -> {target} is missing"
            if target.suffix == ".csv":  # Chromium downloads a CSV instead of showing it: click, compare
                with self.page.expect_download() as download:
                    self.page.locator(f'a[href="{raw}"]').first.click()
                assert Path(download.value.path()).read_bytes() == target.read_bytes()
            else:
                response = self.page.goto(url)
                assert response is not None and response.ok, raw
        self.page.goto(here)
        return len(links)

    def close(self) -> None:
        self.context.close()


def _check_page(browser, index: Path) -> Visit:
    """Every image loaded, no errors, every link followed; returns the visit, still open."""
    visit = Visit(browser, index)
    images = visit.images()
    assert images and all(width > 0 for _, width in images), [src for src, width in images if not width]
    visit.check_links()
    assert visit.errors == []
    return visit


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_checks_catch_a_broken_page(browser, tmp_path):
    """A missing picture is seen both as naturalWidth 0 and as a console error, so the checks can fail."""
    (tmp_path / "broken.html").write_text('<!DOCTYPE html><title>x</title><img src="missing.png" alt="x">')
    visit = Visit(browser, tmp_path / "broken.html")
    assert visit.images() == [["missing.png", 0]]
    assert visit.errors
    visit.close()


def test_score_report_with_labels_in_a_browser(browser, run, models, mvtec, tmp_path):
    odd = mvtec / "noise" / "odd <b>#1.png"  # a path that needs escaping, and quoting in a URL
    (mvtec / "noise" / "img001.png").rename(odd)
    # p50 flags the two noise images and two of the six good ones. Calling three good ones anomalous
    # and a noise image normal makes at least one missed anomaly and one false alarm.
    called = {"good/img000.png": 1, "good/img001.png": 1, "good/img002.png": 1, "noise/img000.png": 0}
    lines = ["path,label"]
    for p in sorted(mvtec.rglob("*.png")):
        lines.append(f"{p},{called.get(p.relative_to(mvtec).as_posix(), int(p.parent.name == 'noise'))}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    result = run(
        "score", mvtec, "-m", models["ae"], "--labels", "labels.csv", "--threshold", "p50", "--report", "rep", "-q"
    )
    assert result.exit_code == 0, result.stderr
    rep = tmp_path / "rep"
    scored = _rows(rep / "scores.csv")
    visit = _check_page(browser, rep / "index.html")
    flagged = [r for r in scored if r["anomalous"] == "true"]
    missed = [r for r in scored if r["label"] == "1" and r["anomalous"] == "false"]
    false_alarms = [r for r in scored if r["label"] == "0" and r["anomalous"] == "true"]
    assert flagged and missed and false_alarms
    assert visit.count("#flagged figure") == len(flagged)
    assert visit.count("#missed figure") == len(missed)
    assert visit.count("#false-alarms figure") == len(false_alarms)
    shown = visit.page.locator("#flagged figcaption code").all_inner_texts()
    assert shown == [r["path"] for r in sorted(flagged, key=lambda r: -float(r["score"]))]
    assert str(odd) in [r["path"] for r in scored]
    assert visit.count("img") == len(flagged) + len(missed) + len(false_alarms) + 3  # and three plots
    assert visit.count("script") == 0
    visit.close()


def test_score_report_without_labels_in_a_browser(browser, run, models, tmp_path):
    write_pngs(tmp_path / "incoming", blobs(5, seed=2))
    result = run("score", "incoming", "-m", models["ae"], "--contamination", "0.4", "--report", "rep", "-q")
    assert result.exit_code == 0, result.stderr
    visit = _check_page(browser, tmp_path / "rep" / "index.html")
    flagged = sum(r["anomalous"] == "true" for r in _rows(tmp_path / "rep" / "scores.csv"))
    assert visit.count("#flagged figure") == flagged == 2
    assert visit.count("#missed") == 0 and visit.count("img") == flagged + 1
    visit.close()


def test_demo_page_in_a_browser(browser, tmp_path):
    out = tmp_path / "demo-out"
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "--quick", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    visit = _check_page(browser, out / "index.html")
    heatmaps = visit.page.eval_on_selector_all("img", "all => all.map(i => i.getAttribute('src'))")
    assert sum(src.startswith("heatmaps/") for src in heatmaps) == len(_rows(out / "top.csv"))
    assert visit.count("script") == 0
    visit.close()

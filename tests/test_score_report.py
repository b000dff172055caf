"""`ae score --report DIR` through the real CLI, read as files (tests/test_browser.py opens it in Chromium)."""

from __future__ import annotations

import csv
import html
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from aecli.report import score_report
from aecli.scoring import metrics
from tests.conftest import blobs, write_pngs
from tests.test_demo import Page


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _sections(text: str) -> dict[str, list[str]]:
    """Each gallery's captions (the paths shown), by the section's id."""
    found = {}
    for key, body in re.findall(r'<section id="([^"]+)">(.*?)</section>', text, re.S):
        found[key] = [html.unescape(p) for p in re.findall(r"<figcaption>.*?<code>(.*?)</code>", body, re.S)]
    return found


def _check_page(folder: Path) -> tuple[str, Page]:
    text = (folder / "index.html").read_text()
    page = Page()
    page.feed(text)
    page.close()
    assert text.startswith("<!DOCTYPE html>")
    assert not page.errors and not page.open, page.errors
    assert "script" not in page.tags
    assert not re.search(r"(src|href)=\"(https?:|//|/|file:)", text), "only relative links"
    for target in page.images + page.links:
        if not target.startswith("#"):
            assert (folder / target).is_file(), target
    return text, page


def test_a_labelled_report_has_the_summary_plots_csv_and_galleries(run, models, mvtec, tmp_path):
    result = run("score", mvtec, "-m", models["ae"], "--labels", "folders", "--contamination", "0.25",
                 "--report", "rep", "-o", "s.csv", "--fail-on-anomaly")  # fmt: skip
    assert result.exit_code == 3, result.stderr  # the report is written before the exit status says "flagged"
    assert "report: rep/index.html" in result.stderr
    rep = tmp_path / "rep"
    assert (rep / "scores.csv").read_bytes() == (tmp_path / "s.csv").read_bytes()  # every row, as -o has it
    for name in ("histogram.png", "roc.png", "precision-recall.png", score_report.MARKER):
        assert (rep / name).is_file(), name
    text, page = _check_page(rep)
    rows = _rows(rep / "scores.csv")
    flagged = [r["path"] for r in sorted(rows, key=lambda r: -float(r["score"])) if r["anomalous"] == "true"]
    assert len(flagged) == 2
    galleries = _sections(text)
    assert galleries["flagged"] == flagged  # highest score first
    missed = [r["path"] for r in rows if r["label"] == "1" and r["anomalous"] == "false"]
    false_alarms = [r["path"] for r in rows if r["label"] == "0" and r["anomalous"] == "true"]
    assert sorted(galleries["missed"]) == sorted(missed) and sorted(galleries["false-alarms"]) == sorted(false_alarms)
    threshold = float(rows[0]["threshold"])
    summary = re.sub(r"<[^>]+>", "", text.split('id="summary"')[1].split("</table>")[0])
    assert "8 images" in summary and "2 (25.0%)" in summary and f"{threshold:.6g}" in summary
    assert "contamination 0.25" in summary and "combined" in summary
    assert re.search(r'id="confusion".*2 caught.*0 missed.*0 false alarms.*6 passed', text, re.S)
    assert "AUROC 1.0000" in text
    maps = sorted(p.name for p in (rep / "maps").iterdir())
    assert maps == ["000006.png", "000007.png"]  # the two noise images, by input position
    assert sorted(src for src in page.images if src.startswith("maps/")) == [f"maps/{m}" for m in maps]


def test_without_labels_there_are_no_curves_and_one_gallery(run, models, mvtec, tmp_path):
    result = run("score", mvtec, "-m", models["ae"], "--threshold", "p50", "--report", "rep", "-q")
    assert result.exit_code == 0, result.stderr
    rep = tmp_path / "rep"
    text, _ = _check_page(rep)
    assert not (rep / "roc.png").exists() and not (rep / "precision-recall.png").exists()
    flagged = sum(r["anomalous"] == "true" for r in _rows(rep / "scores.csv"))
    assert list(_sections(text)) == ["flagged"] and len(_sections(text)["flagged"]) == flagged == 4
    assert "confusion" not in text and "Missed" not in text


def test_every_path_is_escaped(run, models, tmp_path):
    odd = tmp_path / 'a<b>&"c' / "x <i>"
    write_pngs(odd, blobs(3, seed=5))
    result = run("score", tmp_path / 'a<b>&"c', "-m", models["ae"], "--threshold", "0", "--metric", "mse",
                 "--report", "rep", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    text, page = _check_page(tmp_path / "rep")
    assert "<b>" not in text and "<i>" not in text and "a&lt;b&gt;&amp;&quot;c" in text
    paths = [r["path"] for r in _rows(tmp_path / "rep" / "scores.csv")]
    assert sorted(_sections(text)["flagged"]) == sorted(paths) and all("x <i>" in p for p in paths)
    assert "img" in page.tags and "i" not in page.tags and "b" not in page.tags


def test_a_folder_of_other_files_or_an_input_folder_is_refused_before_any_work(run, models, mvtec, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    result = run("score", mvtec, "-m", "missing.safetensors", "--report", mine)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: refusing to write the report into {mine}: it holds other files and no earlier report "
        "(choose another folder, or an empty one)\n"
    )
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    result = run("score", mvtec, "-m", models["ae"], "--report", mvtec / "report")
    assert result.exit_code == 1 and "refusing to write the report into input directory" in result.stderr
    assert not (mvtec / "report").exists()
    (tmp_path / "file").write_text("x")
    result = run("score", mvtec, "-m", models["ae"], "--report", "file")
    assert result.exit_code == 2 and "is a file" in result.stderr


def test_a_report_folder_is_rewritten_by_the_next_report(run, models, mvtec, tmp_path):
    args = ("score", mvtec, "-m", models["ae"], "--report", "rep", "-q")
    assert run(*args, "--threshold", "p75").exit_code == 0
    result = run(*args, "--threshold", "p50")
    assert result.exit_code == 0, result.stderr
    assert sum(r["anomalous"] == "true" for r in _rows(tmp_path / "rep" / "scores.csv")) == 4


def test_without_matplotlib_report_fails_in_one_line_before_any_work(run, npy_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run("score", npy_file, "-m", "missing.safetensors", "--report", "rep")
    assert result.exit_code == 1
    assert result.stderr == "Error: --report needs matplotlib: pip install 'aecli[plot]'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs.npy"]


def test_a_gallery_stops_at_its_limit_and_points_to_the_csv(models, mvtec, tmp_path):
    from aecli import infer
    from aecli.data import open_inputs
    from aecli.scoring.scores import assess, score

    loaded = infer.load_model(models["ae"], "cpu")
    images = open_inputs([str(mvtec)])
    result = assess(loaded, score(loaded, images), threshold="p25")  # 6 of 8 flagged
    made = score_report.write_score_report(tmp_path / "rep", loaded, images, result, limit=2)
    assert made.index == tmp_path / "rep" / "index.html" and made.maps == 2
    text, _ = _check_page(tmp_path / "rep")
    assert len(_sections(text)["flagged"]) == 2
    assert "And 4 more: see <a href=\"scores.csv\">scores.csv</a>." in text
    assert "Flagged images (6)" in text


def test_roc_and_precision_recall_points_and_confusion_by_hand():
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    fpr, tpr = metrics.roc_points(scores, labels)  # thresholds 0.8, 0.4, 0.35, 0.1
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) == pytest.approx(metrics.auroc(scores, labels))
    recall, precision = metrics.pr_points(scores, labels)
    assert recall.tolist() == [0.5, 0.5, 1, 1] and precision == pytest.approx([1, 0.5, 2 / 3, 0.5])
    assert metrics.confusion(scores > 0.3, labels) == {
        "true_positives": 2, "false_positives": 1, "false_negatives": 0, "true_negatives": 1,
    }  # fmt: skip

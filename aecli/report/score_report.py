"""`ae score --report DIR`: one page that a person would rather look at than the CSV.

DIR/index.html says how many images were scored and flagged, by which metric, and the threshold
and how it was chosen; it shows the histogram of the scores, and the flagged images highest first,
each as its map (input, reconstruction, heat of their difference) with its path and score. With
labels it adds ROC and precision-recall curves, the confusion counts, and the missed anomalies and
false alarms as galleries of their own.

The page is plain HTML and CSS: no script, nothing fetched from elsewhere, every picture and link a
relative file in DIR (maps/, the plots, scores.csv with every row), so it opens from file:// and
the folder can be copied or zipped whole. Galleries stop at `limit` images; the CSV has the rest.
"""

from __future__ import annotations

import html
import math
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aecli import __version__
from aecli.errors import MissingExtra, OutputError
from aecli.io.files import check_directory, leader_writes, real, write_bytes_atomic

MARKER = ".ae-report"  # a folder holding this was written by `ae score --report`, which may write there again
GALLERY_LIMIT = 100  # maps per gallery: a page that loads at once; scores.csv lists every image
CSV, HISTOGRAM, ROC, PR = "scores.csv", "histogram.png", "roc.png", "precision-recall.png"
MAPS = "maps"  # maps/<input position>.png: unique for any inputs, whatever their names

METRIC_ABOUT = {
    "mse": "the mean squared difference per pixel between each image and its reconstruction",
    "mae": "the mean absolute difference per pixel between each image and its reconstruction",
    "bce": "the mean binary cross-entropy per pixel of the reconstruction against the image",
    "ssim": "1 - SSIM of image and reconstruction: differences of structure rather than of intensity",
    "latent": "the squared Mahalanobis distance of each image's latent to the training latents",
    "combined": "mse plus the latent distance, each standardised by the model's calibration",
    "elbo": "the VAE's negative evidence lower bound",
    "transforms": "how unsure the model is of each rotation and flip the image is shown in (summed -log p)",
    "geometric": "mse, the latent distance and transforms, each standardised by the model's calibration",
}


@dataclass
class Gallery:
    """One section of maps: its anchor, heading and note, and every image that belongs in it."""

    key: str  # the section's id: flagged, missed or false-alarms
    title: str
    about: str
    positions: np.ndarray  # scored positions (into the Assessment's arrays), highest score first
    limit: int = GALLERY_LIMIT

    @property
    def shown(self) -> np.ndarray:
        return self.positions[: self.limit]


@dataclass
class ScoreReport:
    """What write_score_report made; `maps` counts this process's maps (each writes its share)."""

    directory: Path
    index: Path
    csv: Path
    galleries: list[Gallery] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)  # file names in directory
    maps: int = 0


def check(directory: Path, images=None, outputs: dict[str, Path | None] | None = None) -> None:
    """Fail before any work when the report cannot be written: matplotlib missing, DIR a file or a
    folder of other files (a report's own folder may be rewritten), DIR inside an input directory,
    or another of the command's `outputs` inside DIR, where the report would write over it."""
    from aecli.report import plots

    try:
        plots.check_available()
    except MissingExtra:
        raise MissingExtra("--report needs matplotlib: pip install 'aecli[plot]'") from None
    directory = Path(directory)
    check_directory(directory)
    if directory.is_dir() and any(directory.iterdir()) and not (directory / MARKER).is_file():
        raise OutputError(
            f"refusing to write the report into {directory}: it holds other files and no earlier report "
            "(choose another folder, or an empty one)"
        )
    for option, path in (outputs or {}).items():
        if path is not None and real(directory.expanduser()) in real(Path(path).expanduser()).parents:
            raise OutputError(f"{option} {path} is inside --report {directory}, which the report rewrites; "
                              "choose another path")  # fmt: skip
    if images is not None:  # a report among the inputs would be scored by the next run
        inside = real(directory.expanduser())
        for folder in images.directories:
            if inside == folder or folder in inside.parents:
                raise OutputError(f"refusing to write the report into input directory {folder} (choose another folder)")


def galleries(result, limit: int = GALLERY_LIMIT) -> list[Gallery]:
    """The flagged images, and with labels the missed anomalies and the false alarms, highest score first."""
    values = result.scores.of(result.metric)
    order = np.argsort(-values, kind="stable")  # ties keep input order
    flagged = result.flagged[order]
    found = [
        Gallery(
            "flagged", "Flagged images", "Every image scored above the threshold, highest first.", order[flagged], limit
        )
    ]
    if result.labels is not None:
        anomalous = result.labels[order].astype(bool)
        found += [
            Gallery(
                "missed", "Missed anomalies", "Labelled anomalous, but scored at or below the threshold: "
                "what the threshold lets through, the nearest to it first.", order[anomalous & ~flagged], limit,
            ),
            Gallery(
                "false-alarms", "False alarms", "Labelled normal, but scored above the threshold: what a person "
                "would check for nothing, highest first.", order[~anomalous & flagged], limit,
            ),
        ]  # fmt: skip
    return found


def map_name(position: int) -> str:
    """The map of input image `position`, relative to the report's folder."""
    return f"{MAPS}/{position:06d}.png"


def write_score_report(
    directory: Path, loaded, images, result, *, limit: int = GALLERY_LIMIT, **options
) -> ScoreReport:
    """Write DIR/index.html, scores.csv, the plots and the galleries' maps for an Assessment.

    `images` and `loaded` are what was scored (the maps score the shown images again, as
    `ae score --maps` does); options as scores.score_batches (batch_size, workers, strict, tiles).
    Under torchrun every process writes the maps of its share of the batches and rank 0 the rest,
    so every process must call this with the same arguments. `check(directory, images)` first
    refuses what the command refuses (a folder of other files, an input directory).
    """
    from aecli.scoring.scores import score_batches

    directory = Path(directory)
    try:
        (directory / MAPS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {directory / MAPS}: {e.strerror or e}") from None
    _mark(directory)  # first: a run stopped halfway leaves a folder the next report may write into
    report = ScoreReport(directory, directory / "index.html", directory / CSV, galleries(result, limit))
    shown = np.unique(np.concatenate([g.shown for g in report.galleries] + [np.empty(0, np.int64)]))
    rows = np.sort(result.scores.index[shown.astype(np.int64)])
    if len(rows):
        from aecli.io.writer import Writer
        from aecli.scoring.maps import own_map, write_map

        with Writer() as writer:
            for batch, _, recon in score_batches(loaded, images, rows, **options):
                for x, r, i in zip(batch.pixels, recon, batch.index.tolist()):
                    writer.submit(write_map, directory / map_name(i), x, r, own_map(loaded, x, r))
                    report.maps += 1
    _write_leader_files(report, loaded, images, result)
    return report


@leader_writes
def _mark(directory: Path) -> None:
    text = f"written by ae score --report (aecli {__version__}); it may write here again\n"
    write_bytes_atomic(directory / MARKER, text.encode())


@leader_writes
def _write_leader_files(report: ScoreReport, loaded, images, result) -> None:
    """The files written once: the CSV, the plots, and last the page that links them."""
    from aecli.io.tabular import write_records
    from aecli.report import plots

    directory = report.directory
    write_records(result.records(), "csv", report.csv)
    values = result.scores.of(result.metric)
    if np.isfinite(values).any():
        auroc = result.evaluation.auroc if result.evaluation is not None else None
        plots.score_histogram(values, result.threshold, directory / HISTOGRAM, result.labels, result.metric, auroc)
        report.plots.append(HISTOGRAM)
    if result.evaluation is not None:
        value = result.threshold.value
        plots.roc_plot(values, result.labels, directory / ROC, value, result.metric)
        plots.precision_recall_plot(values, result.labels, directory / PR, value, result.metric)
        report.plots += [ROC, PR]
    write_bytes_atomic(report.index, page(report, loaded, images, result).encode())


_CSS = """
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 72rem;
       margin: 2rem auto; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
code { font-size: 0.9em; overflow-wrap: anywhere; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; margin: 0.8rem 0; }
th, td { text-align: left; padding: 0.25rem 0.8rem 0.25rem 0; vertical-align: top; }
table.counts td, table.counts th { border: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: right; }
table.counts th[scope=row] { text-align: left; }
.caveat { background: #fff4e0; border-left: 4px solid #e0a030; padding: 0.4rem 0.8rem; }
.plots img { border: 1px solid #ddd; max-width: 100%; height: auto; }
.plots figure { display: inline-block; vertical-align: top; margin: 0.4rem 1rem 1rem 0; max-width: 520px; }
.gallery { display: flex; flex-wrap: wrap; gap: 1rem; }
.gallery figure { margin: 0; max-width: 100%; }
.gallery img { border: 1px solid #ddd; max-width: 100%; height: auto; image-rendering: pixelated; display: block; }
figcaption { font-size: 0.9rem; color: #555; max-width: 28rem; }
.score { font-weight: 600; color: #222; } .tag { font-size: 0.8rem; padding: 0 0.3rem; border-radius: 3px; }
.tag.anomalous { background: #fbe3e3; } .tag.normal { background: #e3eefb; }
.small { font-size: 0.85rem; color: #666; }
"""


def page(report: ScoreReport, loaded, images, result) -> str:
    """index.html: one page, no scripts, nothing fetched from elsewhere; every path escaped."""
    e = html.escape
    values = result.scores.of(result.metric)
    n, flagged = len(values), int(result.flagged.sum())
    model = Path(loaded.file.path).name
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>ae score: {e(images.description)}</title>',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{_CSS}</style></head><body>",
        "<h1>ae score report</h1>",
        f"<p>{n} image{_s(n)} from <code>{e(images.description)}</code> scored by <code>{e(model)}</code> "
        f"({e(loaded.config.variant)}, {e(loaded.config.arch)}).</p>",
        _nav(report),
        '<h2 id="summary">Summary</h2>',
        _summary(report, result, n, flagged),
    ]
    parts += [f'<p class="caveat">{e(caveat)}</p>' for caveat in result.caveats]
    if result.evaluation is not None:
        parts += ['<h2 id="labels">Against the labels</h2>', _evaluation(result)]
    if report.plots:
        parts += ['<h2 id="plots">Plots</h2>', '<div class="plots">']
        captions = {
            HISTOGRAM: "How the scores spread, and the threshold above which an image is flagged.",
            ROC: "Anomalies caught against normal images flagged, over every threshold; the dot is the one in use.",
            PR: "How many flagged images are anomalies, against how many anomalies are flagged; the dot is the "
            "threshold in use.",
        }
        for name in report.plots:
            parts.append(
                f'<figure><a href="{_href(name)}"><img src="{_href(name)}" alt="{e(captions[name])}" width="520" '
                f'height="390"></a><figcaption>{e(captions[name])}</figcaption></figure>'
            )
        parts.append("</div>")
    for gallery in report.galleries:
        parts += _gallery(gallery, result, values)
    parts.append(
        f'<p class="small">Every score is in <a href="{_href(CSV)}">{CSV}</a>. Made by ae score --report '
        f"(aecli {e(__version__)}).</p></body></html>\n"
    )
    return "\n".join(parts)


def _nav(report: ScoreReport) -> str:
    links = [("summary", "Summary")]
    links += [("labels", "Against the labels")] if any(g.key == "missed" for g in report.galleries) else []
    links += [("plots", "Plots")] if report.plots else []
    links += [(g.key, f"{g.title} ({len(g.positions)})") for g in report.galleries]
    items = [f'<a href="#{k}">{html.escape(text)}</a>' for k, text in links]
    return "<nav>" + "".join(items) + f'<a href="{_href(CSV)}">{CSV}</a></nav>'


def _summary(report: ScoreReport, result, n: int, flagged: int) -> str:
    e, t = html.escape, result.threshold
    skipped = result.scores.skipped
    rows = [
        ("scored", f"{n} image{_s(n)}" + (f" ({skipped} unreadable, skipped)" if skipped else "")),
        ("flagged", f'<a href="#flagged">{flagged}</a> ({flagged / max(n, 1):.1%}): scored above the threshold'),
        ("metric", f"<code>{e(result.metric)}</code>: {e(METRIC_ABOUT.get(result.metric, ''))}"),
        ("threshold", f"{_number(t.value)}"),
        ("chosen by", e(t.how)),
    ]
    body = "".join(f'<tr><th scope="row">{k}</th><td>{v}</td></tr>' for k, v in rows)
    return f'<table class="summary">{body}</table>'


def _evaluation(result) -> str:
    from aecli.scoring.metrics import confusion

    e, ev = html.escape, result.evaluation
    c = confusion(result.flagged, result.labels)
    return (
        f"<p>{ev.anomalous} labelled anomalous and {ev.normal} normal: AUROC {ev.auroc:.4f}, average precision "
        f"{ev.average_precision:.4f}, F1 {ev.f1:.4f} at this threshold (the best F1, {ev.best_f1:.4f}, at "
        f"{e(_number(ev.best_threshold))}).</p>"
        '<table class="counts" id="confusion"><tr><th></th><th scope="col">flagged</th>'
        '<th scope="col">not flagged</th></tr>'
        f'<tr><th scope="row">anomalous</th><td>{c["true_positives"]} caught</td>'
        f'<td><a href="#missed">{c["false_negatives"]} missed</a></td></tr>'
        f'<tr><th scope="row">normal</th><td><a href="#false-alarms">{c["false_positives"]} false '
        f'alarm{_s(c["false_positives"])}</a></td><td>{c["true_negatives"]} passed</td></tr></table>'
    )


def _gallery(gallery: Gallery, result, values: np.ndarray) -> list[str]:
    e = html.escape
    total = len(gallery.positions)
    parts = [
        f'<section id="{gallery.key}"><h2>{e(gallery.title)} ({total})</h2>',
        f"<p>{e(gallery.about)}</p>",
    ]
    if not total:
        return parts + ['<p class="small">None.</p></section>']
    parts.append('<div class="gallery">')
    for rank, k in enumerate(gallery.shown.tolist(), start=1):
        path = result.scores.sources[k]
        name = map_name(int(result.scores.index[k]))
        tag = ""
        if result.labels is not None:
            label = "anomalous" if result.labels[k] else "normal"
            tag = f' <span class="tag {label}">labelled {label}</span>'
        parts.append(
            f'<figure class="item"><a href="{_href(name)}"><img src="{_href(name)}" '
            f'alt="{e(path)}: input, reconstruction and heatmap"></a>'
            f'<figcaption>{rank}. score <span class="score">{_number(float(values[k]))}</span>{tag}<br>'
            f"<code>{e(path)}</code></figcaption></figure>"
        )
    parts.append("</div>")
    if total > len(gallery.shown):
        more = total - len(gallery.shown)
        parts.append(f'<p class="small">And {more} more: see <a href="{_href(CSV)}">{CSV}</a>.</p>')
    return parts + ["</section>"]


def _href(relative: str) -> str:
    """A relative file name as an attribute value: %-quoted for the URL (# or ? in a name), then escaped."""
    return html.escape(urllib.parse.quote(relative))


def _number(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def _s(count: int) -> str:
    return "" if count == 1 else "s"

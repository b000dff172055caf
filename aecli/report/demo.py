"""`ae demo`: a tour of what ae does, on the bundled sample, left in a folder as pictures and a report.

Every step is one or more `ae` command lines, run in this process by the runner the CLI hands
in, inside the output folder. So the commands the report lists are the ones that made its
pictures, and running them again in that folder reproduces every result.
"""

from __future__ import annotations

import contextlib
import csv
import html
import importlib.util
import io
import os
import platform
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aecli import __version__
from aecli.data.images import header_size
from aecli.data.named import CLASS_NAMES
from aecli.errors import AecliError, Interrupted, OutputError
from aecli.io.files import write_bytes_atomic

MARKER = ".ae-demo"  # a folder holding this was written by `ae demo`, which may write there again
NORMAL_CLASS = 7  # sneakers: one narrow kind of thing, with sandals and boots as near misses
NOISE = 0.2  # the std of the noise added to held-out images for the denoiser
VAE_LATENT = 8  # samples from 8 numbers look like garments; from 16 or 32, more often like blobs
HEATMAPS = 6  # the most anomalous images that get a heatmap
TEXTURE = "texture"  # the folder of the woven texture the defect step inspects (report/texture.py)
SCRATCH_MAPS = 3  # the scratched test images whose maps the report shows

Runner = Callable[[list[str]], int]  # runs one `ae` command line (without "ae"), returns its exit status


@dataclass(frozen=True)
class Size:
    """How much the tour trains on and for how long: the real tour, or a tiny one for tests."""

    train: str = "sample"  # what the denoiser and the VAE learn from
    test: str = "sample:test"  # the held-out images every result is measured on
    dae_epochs: int = 3  # a unet denoiser is already good after 3 passes over 2,000 images
    vae_epochs: int = 20  # the VAE's samples keep sharpening up to about here
    ae_epochs: int = 20  # 200 sneakers: cheap epochs, and the scores separate better with more
    draem_epochs: int = 20  # 120 steps on 16 px crops: 14 s on 2 cores, pixel AUROC 0.99 on the texture


FULL = Size()
QUICK = Size(
    train="sample:class=0,7", test="sample:test:class=0,5,7", dae_epochs=1, vae_epochs=1, ae_epochs=1, draem_epochs=1
)


@dataclass
class Picture:
    path: str  # relative to the output folder
    caption: str  # one sentence: what to see in it


@dataclass
class Step:
    """A few `ae` command lines that belong together, and what they left behind."""

    key: str
    title: str  # "training a denoising model": the progress line and the report's heading
    about: str  # one or two sentences for the report: what the step shows and why
    commands: list[list[str]]
    pictures: list[Picture] = field(default_factory=list)
    result: str = ""  # one line of numbers, filled in once the step has run
    seconds: float = 0.0
    log: str = ""  # its commands' output, relative to the output folder


@dataclass
class Demo:
    """What `run` made: the report's paths, the steps with their timings and numbers."""

    out: Path
    index: Path
    report: Path
    steps: list[Step]
    seconds: float
    plots: bool

    @property
    def pictures(self) -> list[Path]:
        return [self.out / p.path for s in self.steps for p in s.pictures]


def plots_available() -> bool:
    """The plots need matplotlib (the `plot` extra); without it the tour skips them, with a note."""
    return importlib.util.find_spec("matplotlib") is not None and importlib.util.find_spec("aecli.report.plots") is not None


def plan(size: Size = FULL, *, plots: bool = True, device: str | None = None, seed: int = 0) -> list[Step]:
    """The tour as command lines, with file names relative to the output folder."""
    dev = f" --device {shlex.quote(device)}" if device else ""
    seeded = f" --seed {seed}"
    plot = " --plot" if plots else ""  # `ae train --plot`: loss curves beside the model, in MODEL.loss.png
    normal = CLASS_NAMES[NORMAL_CLASS].lower()
    ae = f"{normal}s.safetensors"

    def picture(path: str, caption: str, is_plot: bool = False) -> list[Picture]:
        return [Picture(path, caption)] if plots or not is_plot else []

    return [
        Step(
            "denoiser",
            "training a denoising model",
            "A denoising autoencoder learns to map images with noise added back to the clean images. "
            "Its unet keeps fine detail through skip connections, so a few passes over the sample suffice.",
            _lines(
                f"train {size.train} --variant denoising --epochs {size.dae_epochs}{seeded}{dev} -o dae.safetensors "
                f"--preview dae-preview.png{plot}"
            ),
            picture(
                "dae-preview.png",
                "Validation images (top row), the same with noise added (middle) and the denoiser's output (bottom).",
            )
            + picture("dae.loss.png", "Training and validation loss after each epoch.", is_plot=True),
        ),
        Step(
            "denoise",
            "denoising held-out images",
            f"The denoiser cleans test images it never saw, after Gaussian noise of std {NOISE:g} is added; "
            "`--reference` measures the result against the clean originals.",
            _lines(
                f"denoise {size.test} -m dae.safetensors --add-noise {NOISE:g}{seeded} --reference {size.test} "
                f"--report denoise.csv --grid denoised.png{dev}"
            ),
        ),
        Step(
            "vae",
            "training a VAE and sampling from it",
            f"A variational autoencoder learns a code of {VAE_LATENT} numbers per image whose prior is a standard "
            "Gaussian, so decoding random draws from that Gaussian gives new images. Binary cross-entropy suits "
            "these mostly dark pictures better than squared error, and gives sharper samples.",
            _lines(
                f"train {size.train} --variant vae --loss bce --latent-dim {VAE_LATENT} --epochs {size.vae_epochs}"
                f"{seeded}{dev} -o vae.safetensors --preview vae-preview.png{plot}",
                f"sample -m vae.safetensors -n 64 --grid vae-samples.png{seeded}{dev}",
            ),
            picture(
                "vae-preview.png",
                "Validation images (top row) and the VAE's reconstructions (bottom): "
                f"blurrier than the denoiser's, since everything passes through {VAE_LATENT} numbers.",
            )
            + picture(
                "vae-samples.png",
                "64 new images decoded from random draws of the VAE's prior: none of them "
                "is in the sample, yet most are recognisable garments.",
            )
            + picture(
                "vae.loss.png", "The VAE's loss (reconstruction error plus the KL term) after each epoch.", is_plot=True
            ),
        ),  # fmt: skip
        Step(
            "classes",
            "drawing each class from a conditional VAE",
            "A conditional VAE (`--condition class`) sees each image's class beside it, in the encoder and the "
            "decoder, so `ae sample --class NAME` draws the class asked for; `--class all` draws every class "
            "from the same latents.",
            _lines(
                f"train {size.train} --variant vae --condition class --loss bce --latent-dim {VAE_LATENT} "
                f"--epochs {size.vae_epochs}{seeded}{dev} -o cvae.safetensors",
                f"sample -m cvae.safetensors --class all -n 8 --grid cvae-samples.png{seeded}{dev}",
            ),
            picture(
                "cvae-samples.png",
                "One row per class (in the order `ae info` lists them), 8 samples each; each column decodes the "
                "same latent draw, so a column keeps one style across the classes.",
            ),
        ),
        Step(
            "latents",
            "mapping the latent space",
            "`ae encode` writes one latent vector per image; a 2-D projection of them shows what the VAE "
            "learned without ever seeing a label: images of one class gather together.",
            _lines(
                f"encode {size.test} -m vae.safetensors -o latents.npz{dev}"
                + (" --plot latent-map.png" if plots else "")
            ),
            picture(
                "latent-map.png",
                "The test images' latents projected to two dimensions and coloured by class.",
                is_plot=True,
            ),
        ),  # fmt: skip
        Step(
            "one-class",
            f"training on {normal}s only",
            f"For anomaly detection a plain autoencoder learns one class only ({normal}s, class {NORMAL_CLASS}); "
            "whatever it reconstructs badly is unlike what it learned.",
            _lines(f"train sample:class={NORMAL_CLASS} --epochs {size.ae_epochs}{seeded}{dev} -o {ae}"),
        ),
        Step(
            "score",
            "scoring the other classes",
            f"Every test image gets an anomaly score; with the test set's labels (`--labels class={NORMAL_CLASS}`: "
            f"{normal}s are normal) `ae score` also measures how well the scores separate the classes. The second "
            f"command draws heatmaps for the {HEATMAPS} highest scores: each shows the input, its reconstruction, "
            "and where the two differ (bright: large error).",
            _lines(
                f"score {size.test} -m {ae} --labels class={NORMAL_CLASS} -o scores.csv{dev}"
                + (" --plot score-hist.png" if plots else ""),
                f"score {size.test} -m {ae} --top {HEATMAPS} --maps heatmaps --maps-all -o top.csv{dev}",
            ),
            picture(
                "score-hist.png",
                f"Anomaly scores of the test images, {normal}s (normal) against the other "
                "classes, and the threshold above which `ae score` flags an image.",
                is_plot=True,
            ),
        ),  # fmt: skip
        Step(
            "defects",
            "finding scratches on a texture",
            "A small defect on a surface is a different anomaly: a thin scratch barely moves a plain "
            "autoencoder's image score (on this texture, `ae train` with default settings ranks the test images "
            "worse than chance: image AUROC 0.39). "
            "`--variant draem` pastes synthetic anomalies into the good images while it trains, "
            "and a small segmentation head learns where an image was altered; it never sees a scratch. The tour "
            f"first writes a woven texture in MVTec AD's layout ({TEXTURE}/: train/good, test/good, test/scratch "
            "and ground_truth/scratch), so `--labels folders` also measures the maps pixel by pixel.",
            _lines(
                f"train {TEXTURE}/train/good --variant draem --patch-size 16 --patches-per-image 8 "
                f"--epochs {size.draem_epochs}{seeded}{dev} -o draem.safetensors",
                f"score {TEXTURE}/test -m draem.safetensors --labels folders -o defects.csv --maps defect-maps "
                f"--maps-all{dev}",
            ),
        ),
    ]


def _lines(*commands: str) -> list[list[str]]:
    """Command lines as typed (without `ae`), split as a shell would."""
    return [shlex.split(c) for c in commands]


def command_line(args: list[str]) -> str:
    """What to type in a shell to run `args` again."""
    return "ae " + " ".join(shlex.quote(a) for a in args)


def run(
    out: Path,
    runner: Runner,
    *,
    progress: Callable[[str], None] | None = None,
    device: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    quick: bool = False,
) -> Demo:
    """Run the tour into `out` and write out/index.html and out/report.md; returns what was made."""
    say = progress or (lambda text: None)
    out = Path(out)
    prepare(out, overwrite)
    plots = plots_available()
    if not plots:
        say("note: matplotlib is not installed, so the plots are skipped (pip install 'aecli[plot]')")
    size = QUICK if quick else FULL
    steps = plan(size, plots=plots, device=device, seed=seed)
    started = time.perf_counter()
    for number, step in enumerate(steps, start=1):
        say(f"[{number}/{len(steps)}] {step.title} ...")
        _BEFORE.get(step.key, lambda *a: None)(out, seed)
        _run_step(out, number, step, runner)
        _AFTER.get(step.key, lambda *a: None)(out, step, size)
        say(f"[{number}/{len(steps)}] done in {step.seconds:.1f} s" + (f": {step.result}" if step.result else ""))
    demo = Demo(out, out / "index.html", out / "report.md", steps, time.perf_counter() - started, plots)
    for step in steps:
        step.pictures = [p for p in step.pictures if (out / p.path).is_file()]  # a plot a command chose not to draw
    write_bytes_atomic(demo.report, markdown(demo).encode())
    write_bytes_atomic(demo.index, page(demo).encode())
    return demo


def prepare(out: Path, overwrite: bool) -> None:
    """Make the folder; refuse one that holds other files unless asked. Nothing is ever deleted."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write the demo into {out}: it is a file")
    if out.is_dir() and any(out.iterdir()) and not _earlier_demo(out) and not overwrite:
        raise OutputError(
            f"refusing to write into {out}: it holds other files and no earlier demo "
            "(choose another -o, or --overwrite to write beside them; nothing is deleted)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {out}: {e.strerror or e}") from None
    write_bytes_atomic(
        out / MARKER, f"written by ae demo (aecli {__version__}); ae demo may write here again\n".encode()
    )


# What `make demo` wrote before `ae demo` existed (and so before the marker): such a folder is ours too.
_MAKE_DEMO_FILES = {
    "dae.safetensors", "dae-preview.png", "denoised", "denoised.png", "vae.safetensors", "vae-samples.png",
    "latents.npz", "latents.txt", "sneakers.safetensors", "scores.csv", "maps", "top-maps",
}  # fmt: skip


def _earlier_demo(out: Path) -> bool:
    names = {p.name for p in out.iterdir()}
    return (out / MARKER).is_file() or ("dae.safetensors" in names and names <= _MAKE_DEMO_FILES)


def _run_step(out: Path, number: int, step: Step, runner: Runner) -> None:
    """Run the step's commands inside `out`, their output to a log; a failure stops the tour."""
    step.log = f"logs/{number}-{step.key}.txt"
    transcript = []
    started = time.perf_counter()
    try:
        for args in step.commands:
            with _inside(out), _captured() as output:
                code = runner(args)
            transcript.append(f"$ {command_line(args)}\n{output.text()}")
            if code == Interrupted.exit_code:
                raise Interrupted(f"demo interrupted in step {number} ({step.title})")
            if code:
                lines = [line for line in output.text().splitlines() if line.strip()]
                last = lines[-1].removeprefix("Error: ") if lines else "no output"
                raise AecliError(
                    f"demo step {number} ({step.title}) failed: `{command_line(args)}` exited {code}: {last} "
                    f"(full output in {out / step.log})"
                )
    finally:
        step.seconds = time.perf_counter() - started
        write_bytes_atomic(out / step.log, "\n".join(transcript).encode())


class _Output:
    """A stand-in for stdout and stderr that keeps text and bytes (`encode` writes to .buffer)."""

    def __init__(self) -> None:
        self.raw = io.BytesIO()
        self.stream = io.TextIOWrapper(self.raw, encoding="utf-8", errors="replace", write_through=True)

    def text(self) -> str:
        self.stream.flush()
        return self.raw.getvalue().decode("utf-8", errors="replace")


@contextlib.contextmanager
def _captured() -> Iterator[_Output]:
    output = _Output()
    with contextlib.redirect_stdout(output.stream), contextlib.redirect_stderr(output.stream):
        yield output


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Run in `folder`, so the commands' relative paths are the ones the report shows."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _after_denoise(out: Path, step: Step, size: Size) -> None:
    rows = _rows(out / "denoise.csv")
    mean = {k: sum(float(r[k]) for r in rows) / len(rows) for k in ("psnr_before", "psnr_after", "ssim_after")}
    step.result = (
        f"PSNR {mean['psnr_before']:.1f} dB with noise, {mean['psnr_after']:.1f} dB denoised "
        f"(SSIM {mean['ssim_after']:.3f}) over {len(rows)} test images"
    )
    step.pictures.append(
        Picture(
            "denoised.png",
            f"Test images with noise of std {NOISE:g} (top row), denoised (middle) and the clean originals "
            f"(bottom): {mean['psnr_before']:.1f} dB before, {mean['psnr_after']:.1f} dB after.",
        )
    )


def _after_score(out: Path, step: Step, size: Size) -> None:
    from aecli.scoring import metrics
    from aecli.data import open_inputs

    rows = _rows(out / "scores.csv")
    scores, labels = [float(r["score"]) for r in rows], [int(r["label"]) for r in rows]
    flagged = sum(r["anomalous"] == "true" for r in rows)
    step.result = (
        f"AUROC {metrics.auroc(scores, labels):.3f} over {len(rows)} test images; "
        f"{flagged} flagged at the model's own threshold"
    )
    images = open_inputs([size.test])
    for rank, row in enumerate(_rows(out / "top.csv"), start=1):
        i = int(row["path"].rsplit("#", 1)[1])
        label = images.label(i)
        name = CLASS_NAMES[label] if label is not None else "image"
        step.pictures.append(
            Picture(
                (Path("heatmaps") / images.relative(i)).as_posix(),
                f"Number {rank} by score ({float(row['score']):.3g}), of class {name}.",
            )
        )


def _before_defects(out: Path, seed: int) -> None:
    from aecli.report import texture

    texture.write_set(out / TEXTURE, seed=seed)


def _after_defects(out: Path, step: Step, size: Size) -> None:
    from aecli.scoring import metrics

    rows = _rows(out / "defects.csv")
    scores, labels = [float(r["score"]) for r in rows], [int(r["label"]) for r in rows]
    said = (out / step.log).read_text()
    pixels = next((line.removeprefix("masks: ") for line in said.splitlines() if line.startswith("masks:")), "")
    step.result = f"image AUROC {metrics.auroc(scores, labels):.3f} over {len(rows)} test images" + (
        f"; {pixels}" if pixels else ""
    )
    scratches = [r for r in rows if Path(r["path"]).parent.name == "scratch"][:SCRATCH_MAPS]
    for row in scratches:
        path = Path("defect-maps") / Path(row["path"]).relative_to(f"{TEXTURE}/test")
        step.pictures.append(
            Picture(
                path.as_posix(),
                f"A scratched test image (score {float(row['score']):.3g}), the backbone's reconstruction, "
                "and the head's map of where it was altered (bright: a defect).",
            )
        )


_BEFORE = {"defects": _before_defects}
_AFTER = {"denoise": _after_denoise, "score": _after_score, "defects": _after_defects}


def _intro(demo: Demo) -> str:
    return (
        f"What `ae` did on its bundled sample (Fashion-MNIST: 2,000 training and 500 test images of "
        f"28x28 pixels), and on a woven texture it draws itself, in {demo.seconds:.0f} s on {_machine()}. "
        "To reproduce any result, run its commands "
        f"inside this folder; `make demo` or `ae demo` runs them all."
    )


def _machine() -> str:
    return f"{os.cpu_count()} CPU core(s), {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def markdown(demo: Demo) -> str:
    """report.md: the same content as index.html, for reading in a terminal or a repository."""
    lines = ["# ae demo", "", _intro(demo), ""]
    if not demo.plots:
        lines += ["(Plots skipped: matplotlib is not installed; `pip install 'aecli[plot]'` adds them.)", ""]
    for number, step in enumerate(demo.steps, start=1):
        lines += [f"## {number}. {_sentence(step.title)}", "", step.about, "", "```sh"]
        lines += [command_line(args) for args in step.commands]
        lines += ["```", ""]
        if step.result:
            lines += [f"**Result:** {step.result}.", ""]
        for picture in step.pictures:
            lines += [f"![{picture.caption}]({picture.path})", "", picture.caption, ""]
        lines += [f"Took {step.seconds:.1f} s; the commands' output is in [{step.log}]({step.log}).", ""]
    return "\n".join(lines)


_CSS = """
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 58rem;
       margin: 2rem auto; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
pre { background: #f4f4f4; padding: 0.7rem 0.9rem; overflow-x: auto; font-size: 0.85rem; border-radius: 4px; }
code { font-size: 0.9em; }
figure { display: inline-block; vertical-align: top; margin: 0.4rem 1.2rem 1rem 0; max-width: 100%; }
img { border: 1px solid #ddd; max-width: 100%; height: auto; }
img.px { image-rendering: pixelated; }
figcaption { font-size: 0.9rem; color: #555; max-width: 32rem; }
.result { font-weight: 600; } .small { font-size: 0.85rem; color: #666; }
"""


def page(demo: Demo) -> str:
    """index.html: one page, no scripts, nothing fetched from elsewhere; pictures linked relatively."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>ae demo</title>',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{_CSS}</style></head><body>",
        "<h1>ae demo</h1>",
        f"<p>{_code(e(_intro(demo)))}</p>",
    ]
    if not demo.plots:
        parts.append(
            '<p class="small">Plots skipped: matplotlib is not installed; '
            "<code>pip install 'aecli[plot]'</code> adds them.</p>"
        )
    for number, step in enumerate(demo.steps, start=1):
        parts += [f"<h2>{number}. {e(_sentence(step.title))}</h2>", f"<p>{_code(e(step.about))}</p>"]
        parts.append("<pre>" + "\n".join(e(command_line(args)) for args in step.commands) + "</pre>")
        if step.result:
            parts.append(f'<p class="result">{e(step.result)}.</p>')
        for picture in step.pictures:
            width, height = _png_size(demo.out / picture.path)
            shown = width * 2 if width < 300 else min(width, 640)  # 28-pixel images are too small at 1:1
            box = f' width="{shown}" height="{round(height * shown / width)}"' if width else ""
            box += ' class="px"' if shown > width else ""  # enlarged pixels stay sharp squares
            parts.append(
                f'<figure><img src="{e(picture.path)}" alt="{e(picture.caption)}"{box}>'
                f"<figcaption>{e(picture.caption)}</figcaption></figure>"
            )
        parts.append(
            f'<p class="small">Took {step.seconds:.1f} s; the commands\' output: '
            f'<a href="{e(step.log)}">{e(step.log)}</a>.</p>'
        )
    parts.append(f'<p class="small">Made by ae demo (aecli {e(__version__)}).</p></body></html>\n')
    return "\n".join(parts)


def _sentence(title: str) -> str:
    return title[:1].upper() + title[1:]


def _code(escaped: str) -> str:
    """`x` in already escaped text to <code>x</code>, as in the Markdown report."""
    pieces = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from the picture's header, without decoding it."""
    with open(path, "rb") as f:
        return header_size(f.read(64)) or (0, 0)

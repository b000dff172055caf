"""What people see on stderr (progress, messages) and the tables `ae` prints: all rich, nothing else.

Colour only when stderr is a terminal and NO_COLOR is unset, as rich decides by itself.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from aecli.io.files import leader_writes
from aecli.io.modelfile import learnt
from aecli.ranks import leader

err = Console(stderr=True, highlight=False)


class Messages:
    """Messages on stderr that `--quiet` silences; errors are printed by the CLI regardless.

    Under torchrun, rank 0 talks for all: the other processes stay quiet.
    """

    def __init__(self, quiet: bool = False):
        self.quiet = quiet or not leader()

    def info(self, text: str) -> None:
        if not self.quiet:
            err.print(text, markup=False, soft_wrap=True)

    def warn(self, text: str) -> None:
        if not self.quiet:
            err.print(f"Warning: {text}", markup=False, style="yellow", soft_wrap=True)


class TrainProgress:
    """A train.Callbacks that draws one bar over all steps and a line per finished epoch."""

    def __init__(self, messages: Messages):
        self.messages = messages
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} img/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            disable=messages.quiet or not err.is_terminal,  # a bar in a log file is noise
            transient=True,
        )
        self.task = None
        self.images, self.started, self.epochs = 0, 0.0, 0

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, epochs: int, steps: int, first_epoch: int, first_step: int) -> None:
        self.epochs, self.steps = epochs, steps
        self.task = self.progress.add_task(
            "train", total=epochs * steps, completed=first_epoch * steps + first_step,
            epoch=f"{first_epoch + 1}/{epochs}", loss="-", rate="-",
        )  # fmt: skip
        self.started = time.perf_counter()

    def step(self, epoch: int, step: int, losses: dict[str, float], images: int, lr: float) -> None:
        self.images += images
        rate = self.images / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(
            self.task, completed=epoch * self.steps + step + 1,
            epoch=f"{epoch + 1}/{self.epochs}", loss=f"{losses['loss']:.4g}", rate=f"{rate:,.0f}",
        )  # fmt: skip

    def epoch_end(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        val = f"  val {val_loss:.5g}" if val_loss is not None else ""
        self.messages.info(f"epoch {epoch + 1}/{self.epochs}  train {train_loss:.5g}{val}")

    def saved(self, epoch: int, run: object) -> None: ...

    def skipped(self, message: str) -> None:
        self.messages.warn(f"skipped {message}")

    def note(self, message: str) -> None:
        self.messages.info(message)


class StreamProgress:
    """An infer.Progress: one bar over the images of a command, a warning per skipped image
    and their count at the end, where a long run's warnings may have scrolled away."""

    def __init__(self, messages: Messages, label: str, refused: list[str] = ()):
        self.messages, self.refused = messages, list(refused)
        self.progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} img/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            disable=messages.quiet or not err.is_terminal,
            transient=True,
        )
        self.task = None
        self.done, self.started, self.skips = 0, time.perf_counter(), 0

    def __enter__(self) -> StreamProgress:
        for message in self.refused:  # inputs left out before streaming began (--skip-bad)
            self.skipped(message)
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
        if self.skips:
            self.messages.warn(f"{self.skips} unreadable image(s) skipped")

    def start(self, total: int) -> None:
        self.task = self.progress.add_task("", total=total, rate="-")
        self.started = time.perf_counter()

    def advance(self, count: int) -> None:
        self.done += count
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, advance=count, rate=f"{rate:,.0f}")

    def skipped(self, message: str) -> None:
        self.skips += 1
        self.messages.warn(f"skipped {message}")


def model_table(info: dict[str, Any]) -> Table:
    """`ae info` as a two-column table of what a model file holds."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    mc, training = info["model_config"], info.get("training") or {}
    table.add_row("file", f"{info['path']} ({info['file_bytes'] / 1e6:.2f} MB)")
    table.add_row("variant", f"{mc['variant']} (arch {mc['arch']})")
    table.add_row("format", f"aecli format {info['format_version']}, written by aecli {info['aecli_version']}")
    table.add_row("parameters", f"{info['parameters']:,}")
    table.add_row("input", f"{mc['channels']} channel(s), {mc['image_size']}x{mc['image_size']}")
    table.add_row("config", ", ".join(f"{k}={v}" for k, v in mc.items() if k not in ("variant", "arch")))
    can = info["capabilities"]
    abilities = [name for name in ("decode", "sample", "denoise", "any_size") if can[name]]
    table.add_row("can", ", ".join(["encode", *abilities]) + f"; latent {'x'.join(map(str, can['latent_shape']))}")
    table.add_row("metrics", ", ".join(can["metrics"]))
    if can.get("classes"):
        table.add_row("classes", f"{', '.join(can['classes'])} (conditional: sample --class NAME, encode --labels)")
    if info.get("train_config"):
        table.add_row("training config", ", ".join(f"{k}={v}" for k, v in info["train_config"].items()))
    if training:
        data = training.get("data", {})
        table.add_row("data", f"{data.get('inputs')}: {data.get('train')} train, {data.get('validation')} validation")
        state = "complete" if training.get("complete") else "incomplete (resume with --resume)"
        table.add_row("epochs", f"{training.get('epochs')}/{training.get('epochs_planned')} {state}")
        losses = training.get("train_loss") or []
        vals = training.get("val_loss") or []
        if losses:
            table.add_row("loss", f"train {losses[-1]:.5g}" + (f", val {vals[-1]:.5g}" if vals else ""))
        table.add_row("trained on", str(training.get("device")))
    calibration = info.get("calibration")
    if calibration:
        n = max(stats["n"] for stats in calibration["metrics"].values())
        table.add_row(
            "calibration",
            f"{calibration['split']}, {n} images: --fpr resolves in steps of {1 / max(n, 1):.2g}"
            + (f", and below {10 / n:.2g} rests on fewer than 10 of them" if n > 10 else "")
            + (f"; on {calibration['device']} in {calibration['precision']}" if "device" in calibration else ""),
        )
        for name, stats in calibration["metrics"].items():
            table.add_row(
                f"calibration {name}",
                f"{calibration['split']} n={stats['n']} median={stats['median']:.4g} p99={stats['p99']:.4g}",
            )
        measured = learnt(calibration)
        if measured:
            mse, variance = measured
            table.add_row(
                "learnt",
                f"held-out mse {mse:.3g}: {mse / variance:.0%} of the images' variance around their mean ({variance:.3g})",
            )
    else:
        table.add_row("calibration", "none")
    latents = info.get("latent_stats")
    table.add_row("latent stats", f"{latents['split']} n={latents['n']}" if latents else "none")
    if info.get("samplers"):
        table.add_row("samplers", ", ".join(info["samplers"]) + " (ae sample --sampler)")
    active = info.get("active_latent_dims")
    if active:
        table.add_row(
            "active latent dims",
            f"{active['active']} of {active['of']} (posterior mean's variance over images > {active['threshold']:g})",
        )
    codebook = info.get("codebook")
    if codebook:
        table.add_row(
            "codebook",
            f"{codebook['used']} of {codebook['size']} codes in use, perplexity {codebook['perplexity']:g} "
            "(of the codes chosen over its last training steps)",
        )
    table.add_row("resumable", "yes (optimizer state inside)" if info["resumable"] else "no")
    return table


@leader_writes
def print_quality(summary: dict[str, float], count: int, noise: str) -> None:
    """`ae denoise --reference`: mean PSNR and SSIM before and after, on stdout (it is the result)."""
    table = Table(box=None, pad_edge=False, title=None)
    table.add_column(f"{count} images")
    table.add_column("PSNR dB", justify="right")
    table.add_column("SSIM", justify="right")
    before = f"input (noise {noise})" if noise else "input"  # what was added: "0.2", "poisson gain 30"
    table.add_row(before, f"{summary['psnr_before']:.2f}", f"{summary['ssim_before']:.4f}")
    table.add_row("denoised", f"{summary['psnr_after']:.2f}", f"{summary['ssim_after']:.4f}")
    print_table(table)


def score_table(records: list[dict[str, Any]]) -> Table:
    """`ae score` on a terminal: one row per image, anomalies in bold red."""
    table = Table(box=None, pad_edge=False)
    table.add_column("path", overflow="fold")
    table.add_column("score", justify="right")
    table.add_column("anomalous")
    labelled = bool(records) and "label" in records[0]
    if labelled:
        table.add_column("label")
    for r in records:
        cells = [r["path"], f"{r['score']:.5g}", "yes" if r["anomalous"] else "no"]
        if labelled:
            cells.append("anomalous" if r["label"] else "normal")
        table.add_row(*cells, style="bold red" if r["anomalous"] else None)
    return table


@leader_writes
def print_evaluation(evaluation, threshold: float) -> None:
    """Label evaluation on stderr: the data on stdout stays one row per image."""
    e = evaluation
    err.print(
        f"labels: {e.normal} normal, {e.anomalous} anomalous; AUROC {e.auroc:.4f}, average precision "
        f"{e.average_precision:.4f}, F1 {e.f1:.4f} at threshold {threshold:.6g} (normal flagged "
        f"{e.normal_flagged:.1%}); best F1 {e.best_f1:.4f} at threshold {e.best_threshold:.6g}",
        markup=False, soft_wrap=True,
    )  # fmt: skip


@leader_writes
def print_pixel_evaluation(evaluation) -> None:
    """Where the anomalies were located, against the masks (scoring/pixel_metrics.py), on stderr."""
    e = evaluation
    err.print(
        f"masks: {e.regions} defect regions in {e.images} images; pixel AUROC {e.auroc:.4f}, PRO "
        f"(to 30% FPR) {e.pro:.4f}", markup=False, soft_wrap=True,
    )  # fmt: skip


@leader_writes
def print_table(table: Table) -> None:
    Console(highlight=False).print(table)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")

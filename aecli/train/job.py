"""The job behind `ae train`: settle the settings and outputs before any work, run fit(), draw the plot.

Everything a user can get wrong (settings, --resume against changed flags, an output that is not
a model file, unwritable paths, matplotlib or TensorBoard missing) fails here, before a single
image is read.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aecli import distributed
from aecli.config import Settings
from aecli.data import ImageSet
from aecli.errors import OutputError, UsageError
from aecli.io import modelfile
from aecli.io.files import check_directory, check_writable, guard_outputs, is_stream
from aecli.train.loop import fit
from aecli.train.run import CallbackList, Callbacks, resume_settings


@dataclass
class Job:
    """A training run, checked and ready: its settings, and where its outputs go."""

    settings: Settings
    out: Path
    previous: modelfile.ModelFile | None = None  # the run --resume continues
    preview: Path | None = None
    loss_plot: Path | None = None
    log_dir: Path | None = None  # TensorBoard events (train/tensorboard.py)


def plan(
    settings: Settings, overrides: dict[str, Any], out: Path | None = None, *, resume: bool = False,
    preview: Path | None = None, plot: bool = False, log_dir: Path | None = None, config_file: Path | None = None,
) -> Job:  # fmt: skip
    """Check the outputs (and, with resume, that flags agree with the stored run) before any work."""
    if resume and config_file is not None:
        raise UsageError(
            f"--resume continues a run with the settings stored in its file; --config {config_file} would be "
            "ignored: leave it out"
        )
    out = out or Path(f"{settings.model.variant}.safetensors")
    if settings.model.as_dict().get("condition") and (preview or log_dir):  # both run the model without classes
        raise UsageError(f"{'--preview' if preview else '--log-dir'} does not work with --condition yet: leave it out")
    job = Job(settings, out, preview=preview)
    if plot:
        from aecli.report import plots

        plots.check_available()
        job.loss_plot = plots.loss_plot_path(out)
    if log_dir is not None:
        from aecli.train import tensorboard

        tensorboard.check_available()
        check_directory(log_dir)
        job.log_dir = Path(log_dir)
    if resume:
        job.previous = modelfile.load(out, with_optimizer=True)
        job.settings = resume_settings(job.previous, overrides)
    else:
        modelfile.check_replaceable(out)
    if is_stream(out):
        raise OutputError(f"cannot train into {out}: the model is saved to a file each epoch, then read back")
    for target in filter(None, [out, preview, job.loss_plot]):
        check_writable(target)
    return job


def check_inputs(job: Job, images: ImageSet) -> None:
    """No output of the job replaces one of its input images, or another output."""
    outputs = [("-o", job.out), ("--preview", job.preview), ("--plot", job.loss_plot)]
    guard_outputs(images.files(), images.directories, files=outputs)


def run(
    job: Job, images: ImageSet, callbacks: Callbacks | None = None, stop: threading.Event | None = None
) -> modelfile.ModelFile:
    """Train (writing TensorBoard logs if asked), then draw the loss curves if asked; under torchrun
    rank 0 draws and writes them."""
    with ExitStack() as closing:
        if job.log_dir is not None:
            from aecli.train.tensorboard import TensorBoardLog

            callbacks = CallbackList(callbacks or Callbacks(), closing.enter_context(TensorBoardLog(job.log_dir)))
        result = fit(
            images, job.settings, job.out, resume=job.previous, callbacks=callbacks, stop=stop, preview=job.preview
        )
    if job.loss_plot and distributed.leader():
        from aecli.report import plots

        plots.loss_curves(result.training, job.loss_plot, title=f"{job.out.name}: loss per epoch")
    return result


def caveats(result: modelfile.ModelFile) -> list[str]:
    """What the user should hear about the model just trained: a warning each."""
    return [c for c in [modelfile.learning_caveat(result.calibration)] if c]


def summary(result: modelfile.ModelFile, seconds: float) -> str:
    """One line on what was trained: `trained ae (conv, 28x28x1, latent 32) on 540 images, ...`."""
    c, t = result.config, result.training
    return (
        f"trained {c.variant} ({c.arch}, {c.image_size}x{c.image_size}x{c.channels}, latent {c.latent_dim}) "
        f"on {t['data']['train']} images, {t['epochs']} epochs in {seconds:.1f} s; train loss {t['train_loss'][-1]:.5g}"
        + (f", val {t['val_loss'][-1]:.5g}" if t["val_loss"] else "")
    )

"""`ae train --log-dir`: TensorBoard logs, written by its own writer (torch.utils.tensorboard, from
the extra `aecli[tensorboard]`) from what fit() reports to its Callbacks.

What a run writes, at the global step epoch * steps_per_epoch + step:
  train/<term>            per step, each named loss term: "loss", and a VAE's "reconstruction" and "kl"
  train/lr                per step, the learning rate the step took
  train/images_per_second per step, since the step before (over all processes under torchrun)
  val/loss                per epoch, at the epoch's last step
  val/reconstructions     per epoch: held-out images, a denoiser's corrupted copies, the outputs
  the projector           after the last epoch: the held-out images' latents, labelled by class or name

A run that starts at step S (0, or where --resume picks up) tells TensorBoard to drop what the
folder holds from step S on (SummaryWriter's purge_step): events written after the last save by
a run that was then interrupted, or by an earlier run into the same folder. So a resumed run's
curves continue with no step shown twice. Under torchrun rank 0 writes: the others' Callbacks
are silent (train/run.py).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import time
from pathlib import Path

import torch

from aecli import runtime
from aecli.data import batch_indices
from aecli.errors import MissingExtra
from aecli.train.run import Callbacks, Run

INSTALL = "--log-dir needs TensorBoard: pip install 'aecli[tensorboard]'"
SHOWN = 8  # held-out images in each epoch's grid, as --preview shows them
EMBEDDED_ROWS = 10_000  # the projector's t-SNE and UMAP take 10,000 points at most anyway
EMBEDDED_VALUES = 1_000_000  # and fewer rows for long (spatial) latents: the TSV is written number by number
THUMBNAIL = 32  # pixels: the sprite of 10,000 images stays under TensorBoard's 8192x8192


def check_available() -> None:
    """Fail before any work, in one line, when the extra is not installed."""
    try:
        import torch.utils.tensorboard  # noqa: F401 (imports tensorboard and checks its version)
    except ImportError:
        raise MissingExtra(INSTALL) from None


class TensorBoardLog(Callbacks):
    """Callbacks that write TensorBoard event files (and the projector's files) to `log_dir`.

    The writer opens at start(), which fit() calls on rank 0 only, and closes on leaving the
    `with` block, so an interrupted run's events are on disk too.
    """

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.writer = None
        self.steps = 1
        self.clock = 0.0
        self.shown = None  # the held-out images of every epoch's grid, read once

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def start(self, epochs: int, steps: int, first_epoch: int, first_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.steps = steps
        self.writer = SummaryWriter(str(self.log_dir), purge_step=first_epoch * steps + first_step)
        self.clock = time.perf_counter()

    def step(self, epoch: int, step: int, losses: dict[str, float], images: int, lr: float) -> None:
        at, now = epoch * self.steps + step, time.perf_counter()
        for name, value in losses.items():
            self.writer.add_scalar(f"train/{name}", value, at)
        self.writer.add_scalar("train/lr", lr, at)
        self.writer.add_scalar("train/images_per_second", images / max(now - self.clock, 1e-9), at)
        self.clock = now

    def epoch_end(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        if val_loss is not None:
            self.writer.add_scalar("val/loss", val_loss, self.last_step(epoch))

    @torch.no_grad()
    def saved(self, epoch: int, run: Run) -> None:
        """The epoch's grid, and after the last epoch the latents; training's random draws are left as they were."""
        at = self.last_step(epoch)
        run.images_at(-1)  # the fixed validation patches of a patch model
        run.model.eval()
        try:
            with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
                grid = self.reconstructions(run)
                if grid is not None:
                    self.writer.add_image("val/reconstructions", grid, at)
                if epoch + 1 == run.tc.epochs:
                    self.embed(run, at)
        finally:
            run.model.train()
        self.writer.flush()  # an epoch's events are on disk for a TensorBoard watching the run
        self.clock = time.perf_counter()  # validation and saving are not training time

    def last_step(self, epoch: int) -> int:
        """Where an epoch's own events go: its last step, before the step a resumed run purges from."""
        return (epoch + 1) * self.steps - 1

    def reconstructions(self, run: Run) -> torch.Tensor | None:
        """A grid: held-out images, (a denoiser's corrupted copies,) then the model's outputs."""
        from torchvision.utils import make_grid

        from aecli.io.pictures import preview_rows

        if self.shown is None:
            self.shown = [x for batch in run.stream([run.evaluation_rows()[:SHOWN]]) for x in batch.pixels]
        if not self.shown:
            return None
        x = runtime.to_device(torch.stack(self.shown), run.device)
        rows = preview_rows(run.model, x, run.device)
        return make_grid(rows.clamp(0, 1), nrow=len(x), padding=2, pad_value=1.0)

    def embed(self, run: Run, at: int) -> None:
        """The held-out images' latents for the projector, each labelled by its class (when the
        inputs have classes) and its name, with a thumbnail of the image."""
        rows = run.evaluation_rows()
        length = math.prod(run.model.capabilities.latent_shape)
        rows = rows[: max(1, min(EMBEDDED_ROWS, EMBEDDED_VALUES // length))]
        latents, thumbnails, index = [], [], []
        for batch in run.stream(batch_indices(rows, run.tc.batch_size)):  # rank 0 alone: every row
            if len(batch.pixels):
                latents.append(run.model.encode(runtime.to_device(batch.pixels, run.device)).flatten(1).cpu())
                thumbnails.append(thumbnail(batch.pixels))
                index.extend(batch.index.tolist())
        if not latents:
            return
        metadata, header = describe(run.images, index)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a warning when a rerun writes the step again
            self.writer.add_embedding(
                torch.cat(latents), metadata=metadata, label_img=torch.cat(thumbnails), global_step=at,
                tag="latents", metadata_header=header,
            )  # fmt: skip


def thumbnail(pixels: torch.Tensor) -> torch.Tensor:
    """Images for the projector's sprite: as they are up to THUMBNAIL pixels, else scaled down to it."""
    pixels = pixels.float().cpu()
    if pixels.shape[-1] <= THUMBNAIL:
        return pixels
    return torch.nn.functional.interpolate(pixels, size=(THUMBNAIL, THUMBNAIL), mode="area").clamp(0, 1)


def describe(images, index: list[int]) -> tuple[list, list[str] | None]:
    """The projector's metadata: each image's name, with its class first when the inputs have classes."""
    from aecli.report.plots import dataset_labels

    names = [re.sub(r"[\t\r\n]", " ", images.name(i)) for i in index]  # a tab or newline would break the TSV
    labels, classes = dataset_labels(images, index)
    if labels is None:
        return names, None
    shown = [
        "" if k is None else f"{k}: {classes[k]}" if classes is not None and 0 <= k < len(classes) else str(k)
        for k in labels
    ]
    return [list(pair) for pair in zip(shown, names)], ["label", "name"]

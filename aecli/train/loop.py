"""fit(): the training loop, top to bottom. It never prints; progress goes out through callbacks.

Every epoch ends with the validation loss and an atomic save of the model file with Adam's
state, so an interrupted run leaves the last complete epoch. Once the last epoch ends, one
calibration pass (scoring/calibration.py) stores the thresholds and the latent statistics.
Each epoch's shuffle and each step's noise are seeded from (seed, epoch, step), so a run that is
stopped and resumed reaches the same weights as one that never stopped (on CPU).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import torch

from aecli import distributed, runtime
from aecli.config import Settings, TrainConfig
from aecli.data import ImageSet, batch_indices
from aecli.errors import InputError, Interrupted
from aecli.io import modelfile
from aecli.scoring import calibration
from aecli.train.run import Callbacks, Run


def fit(
    images: ImageSet,
    settings: Settings,
    out: Path,
    *,
    resume: modelfile.ModelFile | None = None,
    callbacks: Callbacks | None = None,
    stop: threading.Event | None = None,
    preview: Path | None = None,
) -> modelfile.ModelFile:
    """Train on `images`, saving `out` after every epoch; returns the final model file.

    Under torchrun (docs/distributed.md) the model trains in DistributedDataParallel, each process
    takes its share of every global batch, and rank 0 alone reports and writes files.
    """
    run = Run.start(images, settings, out, resume, callbacks or Callbacks())
    tc, cb = run.tc, run.callbacks
    try:
        for epoch in range(run.epoch, tc.epochs):
            train_loss = train_epoch(run, epoch, stop)
            if not run.history.images_seen:  # --skip-bad skipped every one: the weights learnt nothing
                raise InputError(f"no training image could be read: all {len(run.split.train)} were skipped")
            val_loss = validation_loss(run)
            run.refuse_divergence(epoch, None, val_loss, "validation")
            run.history.end_epoch(train_loss, val_loss)
            if epoch + 1 == tc.epochs:
                run.latent_stats, run.calibration = calibrate(run)
            run.save({"epoch": epoch + 1, "step": 0})
            cb.epoch_end(epoch, run.history.train_loss[-1], run.history.val_loss[-1] if val_loss is not None else None)
            cb.saved(epoch, run)
    except KeyboardInterrupt:
        run.saved()
        raise Interrupted(f"interrupted; {out} holds the last saved epoch (continue with --resume)") from None
    finally:
        run.checkpoints.close()  # whatever ended the run, the last epoch's file is whole on disk
    if preview is not None and distributed.leader():
        from aecli.io.pictures import write_preview

        write_preview(preview, run.model, run.images, run.evaluation_rows(), run.config, run.device)
    distributed.barrier()  # under torchrun, the others read the file once rank 0 has written it
    return modelfile.load(out)


def train_epoch(run: Run, epoch: int, stop: threading.Event | None) -> float:
    """One pass over this epoch's shuffle of the training split; the mean loss per image.

    A stop request saves the weights so far and raises Interrupted, so --resume continues here.
    """
    tc, cb, device, model = run.tc, run.callbacks, run.device, run.model
    model.train()
    run.images_at(epoch)
    shuffle = torch.Generator().manual_seed(runtime.step_seed(tc.seed, epoch, 0))
    order = run.split.train[torch.randperm(len(run.split.train), generator=shuffle).numpy()]
    first = run.first_step if epoch == run.epoch else 0
    batches = batch_indices(distributed.shard_epoch(order), run.per_process)[first:]
    loss_sum, count = run.partial if epoch == run.epoch and first else (0.0, 0)  # so a resumed epoch's mean is whole
    total = torch.tensor(loss_sum, device=device)
    window = LossWindow(device)
    last = first + len(batches) - 1
    for step, batch in enumerate(run.stream(batches, pin_memory=device.type == "cuda"), start=first):
        skipped = run.report_unreadable(batch.skipped)
        n = len(batch.pixels)
        lr = learning_rate(tc, run.history.cycles, epoch, step, run.steps_per_epoch)
        terms = {}
        if n or distributed.active():  # under DDP every process takes every step, loaded or not
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            x = runtime.to_device(batch.pixels, device) if n else run.stand_in()
            index = batch.rows if batch.rows is not None else batch.index
            torch.manual_seed(distributed.process_seed(runtime.step_seed(tc.seed, epoch, step + 1)))
            with runtime.autocast(device), run.frozen_statistics(blank=not n):
                terms = run.step_loss(run.batch(x, index))  # "loss", and any other named terms
                loss = terms["loss"] if n else terms["loss"] * 0  # a stand-in adds nothing
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
        asked = stop is not None and stop.is_set()
        if distributed.active():  # one all-reduce a step: the global batch's loss terms and size, and any stop
            values = term_values(terms)
            *sums, n, skipped, asked = distributed.sum_all([*(v * n for v in values), n, skipped, asked], device)
            sums, n, skipped = dict(zip(terms, sums)), int(n), int(skipped)
            total += sums["loss"]
            window.add({name: torch.tensor(s) for name, s in sums.items()}, n, summed=True)
        else:
            if n:
                total += terms["loss"].detach() * n
            window.add(terms, n)
        count += n
        run.history.images_seen += n
        run.history.skipped_images += skipped
        if window.due(step == last or asked):
            losses, images = window.read()
            run.refuse_divergence(epoch, step, losses.get("loss"), "training")
            if images:
                cb.step(epoch, step, losses, images, lr)
        stopping = asked if distributed.active() else stop is not None and stop.is_set()  # asked during step()
        if stopping:
            losses, images = window.read()
            run.refuse_divergence(epoch, step, losses.get("loss"), "training")
            run.history.interrupted_at = {"epoch": epoch, "step": step + 1}
            run.save({"epoch": epoch, "step": step + 1, "loss_sum": float(total), "images": count}, wait=True)
            distributed.barrier()  # rank 0 has written the file before any process exits
            raise Interrupted(
                f"interrupted in epoch {epoch + 1}, step {step + 1}/{run.steps_per_epoch}; "
                f"{run.out} holds the weights so far: continue with --resume"
            )
    return float(total) / max(count, 1)


def term_values(terms: dict[str, torch.Tensor]) -> list[float]:
    """A step's loss terms as floats, read from the device in one go."""
    return torch.stack([t.detach().float() for t in terms.values()]).tolist() if terms else []


class LossWindow:
    """The loss terms of the steps since they were last read, summed where they were computed.

    Reading a loss waits for the device to finish every step queued before it; on a GPU, whose
    steps here take well under a millisecond, a read every step would leave it idle between
    them. So an accelerator's losses are read at most every READ_EVERY seconds (what a progress
    bar shows) and at the end of an epoch; the CPU's, already computed, every step.
    """

    READ_EVERY = 0.1

    def __init__(self, device: torch.device):
        self.every = 0.0 if device.type == "cpu" else self.READ_EVERY
        self.sums: dict[str, torch.Tensor] = {}
        self.images, self.read_at = 0, time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor], n: int, summed: bool = False) -> None:
        """A step's mean terms over its n images (summed=True: already their sums)."""
        if not n:
            return
        for name, value in terms.items():
            value = value.detach().float() * (1 if summed else n)
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.images += n

    def due(self, now: bool) -> bool:
        return bool(self.images) and (now or time.perf_counter() - self.read_at >= self.every)

    def read(self) -> tuple[dict[str, float], int]:
        """The window's mean of each term and its image count, in one read; the window starts anew."""
        values = torch.stack(list(self.sums.values())).tolist() if self.sums else []
        losses = {name: v / max(self.images, 1) for name, v in zip(self.sums, values)}
        images = self.images
        self.sums, self.images, self.read_at = {}, 0, time.perf_counter()
        return losses, images


@torch.no_grad()
def validation_loss(run: Run) -> float | None:
    """The mean loss per validation image, with the same noise every epoch; None without a split."""
    distributed.broadcast_buffers(run.model)  # rank 0's BatchNorm statistics: the ones saved
    if not len(run.split.val):
        return None
    run.images_at(-1)  # the same validation patches every epoch
    run.model.eval()
    means, sizes, skipped = [], [], 0
    for k, batch in enumerate(run.stream(run.blocks(run.split.val))):
        skipped += run.report_unreadable(batch.skipped)  # an unreadable held-out image is said once, as in training
        if len(batch.pixels):
            x = runtime.to_device(batch.pixels, run.device)
            index = batch.rows if batch.rows is not None else batch.index
            # seeded at each batch: a DataLoader draws from the global generator when it starts, held sets do not
            torch.manual_seed(runtime.step_seed(run.tc.seed, -1, k))
            with runtime.autocast(run.device):
                means.append(run.model.loss(run.batch(x, index))["loss"].float())
            sizes.append(len(x))
    run.model.train()
    means = torch.stack(means).tolist() if means else []  # one read from the device, not one a batch
    losses, count = [m * n for m, n in zip(means, sizes)], sum(sizes)
    if distributed.active():
        losses, count, skipped = distributed.concat(losses), distributed.total(count), distributed.total(skipped)
    run.history.skipped_images += skipped
    return sum(losses) / count if count else None


def calibrate(run: Run):
    """After the last epoch: the training latents' Gaussian, then every metric on held-out images
    (whole ones in tiles for a patch model, as `ae score` will see them).

    Each process takes a block of the rows; the scores are gathered here, so all get the whole.
    A conditional model gets none: its scores would need each scored image's class, which `ae
    score` does not take; it is a model to sample from.
    """
    if run.labels is not None:
        return None, None
    run.images_at(-1)
    run.model.eval()
    fit_on = run.stream(run.blocks(calibration.thin(run.split.train)))
    rows = distributed.concat(calibration.latents_of(run.model, run.device, fit_on))
    latents = calibration.latent_stats(np.concatenate(rows), "train") if rows else None
    held, tiling = run.held_out()
    moments = calibration.PixelMoments()
    values = calibration.scores_of(run.model, run.device, held, latents, tiling, moments)
    values = distributed.concat_dict(values)
    variance = distributed.gathered(moments).variance()  # of whole model-sized images: not a patch model's
    run.model.train()
    if not values:
        return latents, None
    split = "validation" if len(run.split.val) else "train"
    scores = {k: np.concatenate(v) for k, v in values.items()}
    return latents, calibration.record(scores, split, run.device.type, variance)


def learning_rate(tc: TrainConfig, cycles: list[int], epoch: int, step: int, steps_per_epoch: int) -> float:
    """Peak `lr` after a linear warm-up over 5 % of a cycle's steps, then a cosine decay to zero.

    A cycle runs from one planned end to the next: a run planned for 10 epochs is one cycle, and
    `--resume --epochs 15` adds a second over epochs 10-15 (a warm restart, as in SGDR) instead of
    stretching the first, which would throw the learning rate back up from near zero in mid-decay.
    A function of the position alone, so a resumed run follows the same curve.
    """
    if tc.lr_schedule == "constant":
        return tc.lr
    end = next((e for e in cycles if epoch < e), cycles[-1])
    start = max([e for e in cycles if e < end], default=0)
    at, total = (epoch - start) * steps_per_epoch + step, (end - start) * steps_per_epoch
    warmup = max(1, total // 20)
    if at < warmup:
        return tc.lr * (at + 1) / warmup
    return tc.lr * 0.5 * (1 + math.cos(math.pi * (at - warmup) / max(1, total - warmup)))

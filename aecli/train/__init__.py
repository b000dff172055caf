"""fit(): the training loop, top to bottom. It never prints; progress goes out through callbacks.

Every epoch ends with a validation pass (loss, calibration, latent statistics) and an atomic
save of the model file with Adam's state, so an interrupted run leaves the last complete epoch.
Each epoch's shuffle and each step's noise are seeded from (seed, epoch, step), so a run that
is stopped and resumed reaches the same weights as one that never stopped (on CPU).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aecli.scoring import calibration as calib
from aecli import distributed, runtime
from aecli.io import modelfile
from aecli.config import ModelConfig, Settings, TrainConfig
from aecli.data import ImageSet, batch_indices, stream
from aecli.data.patches import Patches
from aecli.errors import Interrupted, UsageError
from aecli.models import create_model
from aecli.scoring.scores import LatentGaussian, calibrate_from, image_scores


class Callbacks:
    """What fit() reports; the CLI draws a progress bar from it. Every method may be left as is."""

    def start(self, epochs: int, steps: int, first_epoch: int, first_step: int) -> None: ...
    def step(self, epoch: int, step: int, loss: float, images: int) -> None: ...
    def epoch_end(self, epoch: int, train_loss: float, val_loss: float | None) -> None: ...
    def skipped(self, message: str) -> None: ...


@dataclass
class Split:
    """Which images train and which validate: a fixed function of the seed and the set's size."""

    train: np.ndarray
    val: np.ndarray

    @classmethod
    def make(cls, n: int, val_split: float, seed: int, group: int = 1) -> Split:
        """Split n items; with group > 1, items come in runs of `group` (an image's patches) kept together."""
        n_groups = n // group
        n_val = int(n_groups * val_split)
        if val_split > 0 and n_val == 0 and n_groups >= 2:
            n_val = 1  # a tiny set still gets a held-out image for calibration
        order = torch.randperm(n_groups, generator=torch.Generator().manual_seed(seed)).numpy()

        def expand(groups: np.ndarray) -> np.ndarray:
            return (np.sort(groups)[:, None] * group + np.arange(group)).ravel()

        return cls(train=expand(order[n_val:]), val=expand(order[:n_val]))


@dataclass
class History:
    """The training summary stored in the model file; grows across --resume."""

    data: dict[str, Any]
    device: str
    epochs: int = 0
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    images_seen: int = 0
    skipped_images: int = 0
    interrupted_at: dict[str, int] | None = None

    def as_dict(self, planned: int) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "epochs_planned": planned, "complete": self.epochs >= planned}


def model_config_for(images: ImageSet | Patches, config: ModelConfig, strict: bool = True) -> ModelConfig:
    """Fill channels and size from the first image (or the patch size) when the user did not set them."""
    if isinstance(images, Patches):
        config = dataclasses.replace(config, image_size=images.size)
    if config.channels and config.image_size:
        return config.resolved(config.channels, config.image_size)
    c, h, w = images.first_shape(strict)
    return config.resolved(1 if c <= 2 else 3, min(h, w))


def resume_settings(previous: modelfile.ModelFile, overrides: dict[str, Any]) -> Settings:
    """The settings stored in a model file, with `epochs` (and only that) raised by flags."""
    train = previous.train_config or TrainConfig()
    for key, value in overrides.items():
        if value is None or key in ("epochs", "device", "workers"):
            continue
        stored = getattr(previous.config, key, getattr(train, key, None))
        if value != stored:
            raise UsageError(
                f"--resume continues {previous.path} as it was trained; {key} cannot change ({stored} there)"
            )
    train = dataclasses.replace(
        train, **{k: overrides[k] for k in ("epochs", "device", "workers") if overrides.get(k) is not None}
    )
    return Settings(previous.config, train)


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
    cb = (callbacks or Callbacks()) if distributed.leader() else Callbacks()  # under torchrun, rank 0 reports
    tc = settings.train
    device = runtime.choose_device(tc.device)
    distributed.init(device)
    per_process = distributed.per_process_batch(tc.batch_size)  # the global batch, shared out
    runtime.seed_all(tc.seed)
    refused = getattr(images, "refused", [])  # inputs left out by open_inputs(skip_bad=True)
    if tc.patch_size:
        images = Patches(images, tc.patch_size, tc.patches_per_image, tc.seed)
    config = resume.config if resume else model_config_for(images, settings.model, not tc.skip_bad)
    split = Split.make(len(images), tc.val_split, tc.seed, group=tc.patches_per_image if tc.patch_size else 1)
    if len(split.train) == 0:
        raise UsageError(
            f"{images.description}: {len(images)} image(s) leave none to train on after the validation split"
        )

    model = create_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    history = History(
        data={
            "inputs": images.description,
            "images": len(images),
            "train": len(split.train),
            "validation": len(split.val),
            "non_images_skipped": images.non_images,
        },
        device=str(device) + (f" x {distributed.size()} processes" if distributed.active() else ""),
    )
    epoch, first_step = 0, 0
    calibration = latents = None
    if resume:
        model.load_state_dict(resume.model.state_dict())
        if resume.optimizer is None:
            raise UsageError(f"{resume.path} holds no optimizer state, so it cannot be resumed")
        optimizer.load_state_dict(resume.optimizer["state_dict"])
        epoch, first_step = resume.optimizer["position"]["epoch"], resume.optimizer["position"]["step"]
        known = {f.name for f in dataclasses.fields(History)}
        history = History(**{k: v for k, v in resume.training.items() if k in known})
        history.interrupted_at = None
        calibration, latents = resume.calibration, resume.latent_stats
        if epoch >= tc.epochs:
            raise UsageError(f"{resume.path} is already trained for {epoch} epochs; pass a larger --epochs to go on")

    def save(position: dict[str, int]) -> None:
        if not distributed.leader():
            return
        modelfile.save(
            out, model, tc, history.as_dict(tc.epochs), calibration, latents,
            {"state_dict": optimizer.state_dict(), "position": position},
        )  # fmt: skip

    steps_per_epoch = -(-len(split.train) // tc.batch_size)
    cb.start(tc.epochs, steps_per_epoch, epoch, first_step)
    for message in refused:
        cb.skipped(message)
    if not resume:
        history.skipped_images += len(refused)
    step_loss = distributed.training_loss(model, device)  # DistributedDataParallel under torchrun
    unreadable: set[str] = set()
    try:
        for epoch in range(epoch, tc.epochs):
            model.train()
            if isinstance(images, Patches):
                images.epoch = epoch
            shuffle = torch.Generator().manual_seed(runtime.step_seed(tc.seed, epoch, 0))
            order = split.train[torch.randperm(len(split.train), generator=shuffle).numpy()]
            batches = batch_indices(distributed.shard_epoch(order), per_process)[first_step:]
            total, count = torch.zeros((), device=device), 0
            loader = stream(
                images, batches, config.channels, config.image_size,
                workers=tc.workers, resize=tc.resize, strict=not tc.skip_bad, pin_memory=device.type == "cuda",
            )  # fmt: skip
            for step, batch in enumerate(loader, start=first_step):
                fresh = [m for m in batch.skipped if m not in unreadable]  # each file once, not every epoch
                unreadable.update(fresh)
                for message in fresh:
                    cb.skipped(message)
                n, skipped = len(batch.pixels), len(fresh)
                if n or distributed.active():  # under DDP every process takes every step, loaded or not
                    for group in optimizer.param_groups:
                        group["lr"] = learning_rate(tc, epoch * steps_per_epoch + step, tc.epochs * steps_per_epoch)
                    x = runtime.to_device(batch.pixels, device) if n else _stand_in(config, device)
                    torch.manual_seed(distributed.process_seed(runtime.step_seed(tc.seed, epoch, step + 1)))
                    with runtime.autocast(device):
                        loss = step_loss(x) if n else step_loss(x) * 0  # a stand-in adds nothing
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if not distributed.active():
                        total += loss.detach() * n
                        count += n
                        history.images_seen += n
                        cb.step(epoch, step, float(loss.detach()), n)
                stopping = stop is not None and stop.is_set()
                if distributed.active():  # one all-reduce: the global batch's loss and size, and any stop
                    loss_sum, n, skipped, stopping = distributed.sum_all(
                        [float(loss.detach()) * n, n, skipped, stopping], device
                    )
                    n, skipped = int(n), int(skipped)
                    total += loss_sum
                    count += n
                    history.images_seen += n
                    if n:
                        cb.step(epoch, step, loss_sum / n, n)
                history.skipped_images += skipped
                if stopping:
                    history.interrupted_at = {"epoch": epoch, "step": step + 1}
                    save({"epoch": epoch, "step": step + 1})
                    distributed.barrier()  # rank 0 has written the file before any process exits
                    raise Interrupted(
                        f"interrupted in epoch {epoch + 1}, step {step + 1}/{steps_per_epoch}; "
                        f"{out} holds the weights so far: continue with --resume"
                    )
            first_step = 0
            if isinstance(images, Patches):
                images.epoch = -1  # the same validation patches every epoch
            distributed.broadcast_buffers(model)  # rank 0's BatchNorm statistics: the ones saved
            fitted = None
            if epoch + 1 == tc.epochs and len(split.train) > 1:  # once, at the end: the Gaussian to keep
                fitted = training_latents(model, images, split.train, config, tc, device)
            val_loss, calibration, latents = validate(model, images, split.val, config, tc, device, fitted)
            history.epochs = epoch + 1
            history.train_loss.append(_round(float(total) / max(count, 1)))
            if val_loss is not None:
                history.val_loss.append(_round(val_loss))
            save({"epoch": epoch + 1, "step": 0})
            cb.epoch_end(epoch, history.train_loss[-1], history.val_loss[-1] if val_loss is not None else None)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {out} holds the last saved epoch (continue with --resume)") from None
    if preview is not None and distributed.leader():
        from aecli.io.pictures import write_preview

        write_preview(preview, model, images, split.val if len(split.val) else split.train, config, device)
    distributed.barrier()  # under torchrun, the others read the file once rank 0 has written it
    return modelfile.load(out)


def learning_rate(tc: TrainConfig, step: int, total: int) -> float:
    """Peak `lr` after a linear warm-up over 5 % of the steps, then a cosine decay to zero.

    A function of the step alone, so a resumed run follows the same curve.
    """
    if tc.lr_schedule == "constant":
        return tc.lr
    warmup = max(1, total // 20)
    if step < warmup:
        return tc.lr * (step + 1) / warmup
    return tc.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def validate(
    model, images: ImageSet, rows: np.ndarray, config: ModelConfig, tc: TrainConfig, device: torch.device,
    latent_stats: dict[str, Any] | None = None,
):  # fmt: skip
    """Validation loss, calibration of every anomaly metric, and latent statistics, in one pass.

    Latent distances are measured to `latent_stats` (the training latents, after the last
    epoch), else to the validation latents themselves. With no validation split, calibration
    falls back to the training images (marked as such).
    """
    split = "validation"
    if len(rows) == 0:
        split, rows = "train", np.arange(len(images))
    model.eval()
    gaussian = LatentGaussian(latent_stats) if latent_stats else None
    losses, raw, zs = [], {}, []
    torch.manual_seed(runtime.step_seed(tc.seed, -1, 0))  # the same noise for every epoch's val loss
    for batch in _in_order(images, rows, config, tc):
        if not len(batch.pixels):
            continue
        x = runtime.to_device(batch.pixels, device)
        with runtime.autocast(device):
            losses.append(float(model.training_loss(x)) * len(x))
            scores, _, z = image_scores(model, x, gaussian)
        for name, values in scores.items():
            raw.setdefault(name, []).append(values)
        zs.append(z.cpu())
    model.train()
    if distributed.active():  # each process took a block of the rows: all get the whole split, in order
        losses, raw, zs = distributed.concat(losses), distributed.concat_dict(raw), distributed.concat(zs)
    if not zs:
        return None, None, latent_stats
    n = sum(len(z) for z in zs)
    values = {k: torch.cat(v).numpy() for k, v in raw.items()}
    if latent_stats is None:
        z_all = torch.cat(zs)
        latent_stats = calib.latent_stats(z_all.numpy(), split)
        if latent_stats is not None:
            values["latent"] = LatentGaussian(latent_stats).distance(z_all).numpy()
    val_loss = sum(losses) / n if split == "validation" else None
    return val_loss, calibrate_from(values, split), latent_stats


def _in_order(images, rows: np.ndarray, config: ModelConfig, tc: TrainConfig):
    """The images at `rows` in batches, for the evaluation passes (validation, latent fit);
    under torchrun, this process's block of them."""
    return stream(
        images, distributed.shard_batches(batch_indices(rows, tc.batch_size)), config.channels, config.image_size,
        workers=tc.workers, resize=tc.resize, strict=not tc.skip_bad,
    )  # fmt: skip


LATENT_FIT_LIMIT = 20_000  # enough for a 32-d mean and covariance; bounds the extra pass


@torch.no_grad()
def training_latents(model, images, rows: np.ndarray, config: ModelConfig, tc: TrainConfig, device: torch.device):
    """Latent mean and covariance over the training images (evenly thinned to LATENT_FIT_LIMIT).

    Run once, after the last epoch: what `ae sample` draws from for plain and denoising models,
    and what latent-space anomaly scores measure distance to.
    """
    if len(rows) > LATENT_FIT_LIMIT:
        rows = rows[np.linspace(0, len(rows) - 1, LATENT_FIT_LIMIT).astype(np.int64)]
    model.eval()
    zs = []
    for batch in _in_order(images, rows, config, tc):
        if len(batch.pixels):
            with runtime.autocast(device):
                zs.append(model.encode(runtime.to_device(batch.pixels, device)).float().cpu())
    model.train()
    zs = distributed.concat(zs)
    return calib.latent_stats(torch.cat(zs).numpy(), "train") if zs else None


def _stand_in(config: ModelConfig, device: torch.device) -> torch.Tensor:
    """Blank images for a process whose whole batch failed to load: DDP needs every process to step."""
    return torch.zeros(2, config.channels, config.image_size, config.image_size, device=device)


def _round(value: float) -> float:
    return float(f"{value:.6g}")

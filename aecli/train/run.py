"""A training run's state: what fit() sets up once, resumes, reports through and saves."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm  # BatchNorm1d/2d/3d and SyncBatchNorm

from aecli import distributed, runtime
from aecli.config import ModelConfig, Settings, TrainConfig
from aecli.data import ImageSet, batch_indices, stream
from aecli.data.patches import Patches
from aecli.data.resident import Resident, fits
from aecli.errors import Diverged, UsageError
from aecli.io import modelfile
from aecli.io.writer import Writer


class Callbacks:
    """What fit() reports; the CLI draws a progress bar from it, --log-dir writes TensorBoard events
    (train/tensorboard.py). Every method may be left as is.

    step() gets the batch's mean of each named loss term ("loss" is the one minimised; a VAE adds
    "reconstruction" and "kl") and the learning rate it took. saved() gets the run after each
    epoch's save, for reporters that look at the model: they may run it, never change it. note()
    gets what the run decided that the user did not ask for (more epochs for small data).
    """

    def start(self, epochs: int, steps: int, first_epoch: int, first_step: int) -> None: ...
    def step(self, epoch: int, step: int, losses: dict[str, float], images: int, lr: float) -> None: ...
    def epoch_end(self, epoch: int, train_loss: float, val_loss: float | None) -> None: ...
    def saved(self, epoch: int, run: Run) -> None: ...
    def skipped(self, message: str) -> None: ...
    def note(self, message: str) -> None: ...


class CallbackList(Callbacks):
    """Several Callbacks as one: each hears every report, in the order given."""

    def __init__(self, *each: Callbacks):
        self.each = each

    def start(self, *args) -> None:
        for callbacks in self.each:
            callbacks.start(*args)

    def step(self, *args) -> None:
        for callbacks in self.each:
            callbacks.step(*args)

    def epoch_end(self, *args) -> None:
        for callbacks in self.each:
            callbacks.epoch_end(*args)

    def saved(self, *args) -> None:
        for callbacks in self.each:
            callbacks.saved(*args)

    def skipped(self, *args) -> None:
        for callbacks in self.each:
            callbacks.skipped(*args)

    def note(self, *args) -> None:
        for callbacks in self.each:
            callbacks.note(*args)


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
    cycles: list[int] = field(default_factory=list)  # where each learning-rate cycle ends (loop.learning_rate)

    def end_epoch(self, train_loss: float, val_loss: float | None) -> None:
        self.epochs += 1
        self.train_loss.append(_round(train_loss))
        if val_loss is not None:
            self.val_loss.append(_round(val_loss))

    def as_dict(self, planned: int) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "epochs_planned": planned, "complete": self.epochs >= planned}


def model_config_for(images: ImageSet | Patches, config: ModelConfig, strict: bool = True) -> ModelConfig:
    """Fill channels and size from the first image (or the patch size) when the user did not set them."""
    if isinstance(images, Patches):
        config = config.replace(image_size=images.size)
    if config.channels and config.image_size:
        return config.resolved(config.channels, config.image_size)
    c, h, w = images.first_shape(strict)
    if not config.image_size and min(h, w) < 4:  # as --image-size's own bound: smaller has nothing to learn
        raise UsageError(f"the first image is {w}x{h}, the model's size would be under 4; give --image-size 4 or more")
    return config.resolved(1 if c <= 2 else 3, min(h, w))


def classes_for(images: ImageSet | Patches, config: ModelConfig) -> tuple[ModelConfig, np.ndarray | None]:
    """A conditional model's config with its classes filled in (the names found, sorted, unless
    given or stored), and each image's class number; the config as it is and None for the others."""
    settings = config.as_dict()
    if not settings.get("condition"):
        if settings.get("classes"):
            raise UsageError("--classes names a conditional model's classes: it needs --condition too")
        return config, None
    from aecli.data.classes import class_labels

    whole = images.images if isinstance(images, Patches) else images
    names, labels = class_labels(whole, settings["condition"], settings.get("classes"))
    if isinstance(images, Patches):
        labels = np.repeat(labels, images.per_image)  # patch i comes from image i // per_image
    return config.replace(classes=names), labels


@dataclass
class Run:
    """Everything fit() needs between steps; `start` builds it, fresh or from a resumed file."""

    tc: TrainConfig
    config: ModelConfig
    device: torch.device
    images: ImageSet | Patches
    split: Split
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    out: Path
    callbacks: Callbacks
    epoch: int = 0  # where training (re)starts
    first_step: int = 0
    partial: tuple[float, int] = (0.0, 0)  # the summed loss and the images of the steps an interrupted epoch took
    latent_stats: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    unreadable: set[str] = field(default_factory=set)
    labels: np.ndarray | None = None  # a conditional model's: each training image's class number
    resident: Resident | None = None  # the images, held on the device (--preload)
    step_loss: Callable[[dict[str, Any]], dict[str, torch.Tensor]] | None = None  # model.loss, or through DDP
    checkpoints: Writer = field(default_factory=lambda: Writer(depth=1))  # an accelerator's epoch files

    @classmethod
    def start(
        cls, images: ImageSet, settings: Settings, out: Path, resume: modelfile.ModelFile | None, callbacks: Callbacks
    ) -> Run:
        tc = settings.train
        device = runtime.choose_device(tc.device)
        distributed.init(device)
        runtime.seed_all(tc.seed)
        refused = images.refused  # inputs left out by open_inputs(skip_bad=True)
        if tc.patch_size:
            images = Patches(images, tc.patch_size, tc.patches_per_image, tc.seed)
        config = resume.config if resume else model_config_for(images, settings.model, not tc.skip_bad)
        config, labels = classes_for(images, config)
        split = Split.make(len(images), tc.val_split, tc.seed, group=tc.patches_per_image if tc.patch_size else 1)
        if len(split.train) == 0:
            raise UsageError(
                f"{images.description}: {len(images)} image(s) leave none to train on after the validation split"
            )
        from aecli.models import create_model

        model = create_model(config).to(device)
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
        run = cls(
            tc, config, device, images, split, model, adam(model, tc.lr, device), history, out,
            callbacks if distributed.leader() else Callbacks(),  # under torchrun, rank 0 reports
            labels=labels,
        )  # fmt: skip
        if resume:
            run.resume_from(resume)
        else:
            run.tc = tc = tc.replace(epochs=run.enough_epochs())
            history.skipped_images += len(refused)
            history.cycles = [tc.epochs]
        run.preload()
        if run.channels_last:
            run.model.to(memory_format=torch.channels_last)
            same_layouts(run.optimizer)
        run.step_loss = distributed.training_loss(run.model, device)  # after resuming: DDP copies rank 0's weights
        if tc.compile:
            run.step_loss = run.compiled(run.step_loss)
        run.callbacks.start(tc.epochs, run.steps_per_epoch, run.epoch, run.first_step)
        if tc.epochs > settings.train.epochs:
            run.callbacks.note(
                f"{len(split.train)} training {'crops' if tc.patch_size else 'images'} make {run.steps_per_epoch} step"
                f"{'s' if run.steps_per_epoch > 1 else ''} an epoch: training "
                f"{tc.epochs} epochs, not {settings.train.epochs}, for at least {tc.min_steps} steps "
                "(--min-steps; --epochs N trains N)"
            )
        for message in refused:
            run.callbacks.skipped(message)
        return run

    def resume_from(self, resume: modelfile.ModelFile) -> None:
        """Weights, Adam's state, the position and the history of an interrupted (or finished) run."""
        trained = resume.training.get("epochs", 0)
        if trained >= self.tc.epochs:
            raise UsageError(f"{resume.path} is already trained for {trained} epochs; pass a larger --epochs to go on")
        if resume.optimizer is None:
            raise UsageError(
                f"{resume.path} is a finished run without its optimizer state, so it cannot be resumed; "
                "train with --keep-optimizer to extend a run later"
            )
        data = resume.training.get("data") or {}
        if data.get("images", len(self.images)) != len(self.images):  # its split and position index those
            raise UsageError(
                f"--resume: {resume.path} was trained on {data['images']} images ({data.get('inputs')}), these "
                f"inputs hold {len(self.images)}; resume on the same inputs"
            )
        self.model.load_state_dict(resume.model.state_dict())
        self.optimizer.load_state_dict(resume.optimizer["state_dict"])
        position = resume.optimizer["position"]
        self.epoch, self.first_step = position["epoch"], position["step"]
        self.partial = (position.get("loss_sum", 0.0), position.get("images", 0))  # older files: none
        known = {f.name for f in dataclasses.fields(History)}
        self.history = History(**{k: v for k, v in resume.training.items() if k in known})
        self.history.interrupted_at = None
        cycles = self.history.cycles or [resume.training.get("epochs_planned", self.tc.epochs)]  # older files: one
        self.history.cycles = cycles + ([self.tc.epochs] if self.tc.epochs > cycles[-1] else [])

    def batch(self, x: torch.Tensor, index: torch.Tensor) -> dict[str, Any]:
        """What the objective's loss gets: the images, their rows, and a conditional model's classes.

        `index` may be on the device (a preloaded set's), where the classes are then looked up too.
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batch = {"images": x, "index": index}
        if self.labels is not None:
            if len(index) != len(x):  # a stand-in
                batch["labels"] = torch.zeros(len(x), dtype=torch.long, device=x.device)
            elif index.device.type != "cpu":
                batch["labels"] = torch.as_tensor(self.labels, device=index.device)[index]
            else:
                batch["labels"] = torch.as_tensor(self.labels[index.numpy()], device=x.device)
        return batch

    def preload(self) -> None:
        """Hold the images on the device from the first epoch on (resident.py), where --preload and
        their size allow; patches, cut anew each epoch from whole images, always stream."""
        if self.tc.preload == "no" or isinstance(self.images, Patches):
            return
        shape = (self.config.channels, self.config.image_size, self.config.image_size)
        if self.tc.preload == "yes" or fits(len(self.images), shape, self.device):
            try:
                self.resident = Resident(len(self.images), shape, self.device)
            except RuntimeError:  # torch.OutOfMemoryError among them
                raise UsageError(
                    f"--preload yes: {len(self.images)} images of {'x'.join(map(str, shape))} do not fit in "
                    f"{self.device.type} memory; use --preload auto or no"
                ) from None

    @property
    def channels_last(self) -> bool:
        """--channels-last: auto is yes on CUDA (benchmarks/gpu.py), no elsewhere, where results stay as they were."""
        return self.tc.channels_last == "yes" or (self.tc.channels_last == "auto" and self.device.type == "cuda")

    @property
    def per_process(self) -> int:
        return distributed.per_process_batch(self.tc.batch_size)  # the global batch, shared out

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.split.train) // self.tc.batch_size)

    def enough_epochs(self) -> int:
        """The epochs asked for, raised until they make min_steps steps: 10 epochs of a small folder
        are too few steps to learn more than its mean image."""
        return max(self.tc.epochs, -(-self.tc.min_steps // self.steps_per_epoch))

    def images_at(self, epoch: int) -> None:
        """Patches are cut anew each epoch; epoch -1 gives the fixed validation patches."""
        if isinstance(self.images, Patches):
            self.images.epoch = epoch

    def evaluation_rows(self) -> np.ndarray:
        """The held-out rows; every row when nothing is held out (calibration says so)."""
        return self.split.val if len(self.split.val) else np.arange(len(self.images))

    def stream(self, batches: list[np.ndarray], pin_memory: bool = False, whole: bool = False):
        """Batches of the training images at the model's size, from the device where they are held
        there; whole=True: the images patches are cut from, at their own size."""
        held = self.resident if self.resident is not None and not self.resident.given_up and not whole else None
        if held is not None and held.complete:
            return held.stream(batches)
        tc, images = self.tc, self.images
        channels, size = self.config.channels, self.config.image_size
        if whole and isinstance(images, Patches):
            images, channels, size = images.images, None, None
        resize = None if tc.exact_size else self.config.resize
        streamed = stream(
            images, batches, channels, size,
            workers=tc.workers, resize=resize, strict=not tc.skip_bad, pin_memory=pin_memory,
        )  # fmt: skip
        return streamed if held is None else held.fill(batches, streamed)

    def held_out(self):
        """This process's block of the held-out images for calibration, and how to score them: a
        patch model scores whole images in tiles (scoring.scores.Tiling), as `ae score` does."""
        from aecli.scoring.scores import Tiling

        rows = self.evaluation_rows()
        if not isinstance(self.images, Patches):
            return self.stream(self.blocks(rows)), None
        whole = np.unique(rows // self.images.per_image)
        tiling = Tiling(self.config.image_size, self.config.channels, self.tc.batch_size)
        return self.stream(self.blocks(whole), whole=True), tiling

    def blocks(self, rows: np.ndarray) -> list[np.ndarray]:
        """The rows in batches, in order, for an evaluation pass: this process's block of them."""
        return distributed.shard_batches(batch_indices(rows, self.tc.batch_size))

    def report_unreadable(self, messages: list[str]) -> int:
        """Report each unreadable file once, not every epoch; how many were new."""
        fresh = [m for m in messages if m not in self.unreadable]
        self.unreadable.update(fresh)
        for message in fresh:
            self.callbacks.skipped(message)
        return len(fresh)

    def refuse_divergence(self, epoch: int, step: int | None, loss: float | None, which: str) -> None:
        """A loss that is not finite stops the run before anything is saved from it.

        The weights are already ruined by then (NaN spreads through every later step), and a
        NaN threshold would flag nothing: `score > nan` is always false.
        """
        if loss is None or math.isfinite(loss):
            return
        where = f"epoch {epoch + 1}" + (f", step {step + 1}" if step is not None else "")
        kept = (
            f"{self.out} keeps epoch {self.history.epochs}, the last finite one" if self.history.epochs
            else "no model file was written"
        )  # fmt: skip
        raise Diverged(
            f"training diverged in {where}: the {which} loss is {loss}; {kept}. "
            f"Try a lower --lr (this run: {self.tc.lr:g})"
        )

    def compiled(self, step_loss: Callable) -> Callable:
        """torch.compile(step_loss), first tried on blank batches of each size an epoch takes. Where
        that fails (no C++ compiler, an op inductor gets wrong), training goes on without it and
        says so in a note, instead of stopping at the first step with torch's report.

        Sizes are fixed (dynamic=False): an epoch has two at most, and some ops (randn of a batch's
        shape) take no symbolic size. The trial leaves no trace: weights, buffers (a codebook's
        placement, BatchNorm's statistics) and gradients are put back as they were.
        """
        # a CUDA build of torch on a machine without CUDA logs where it looked for it: not ours to say
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        compiled = torch.compile(step_loss, dynamic=False)
        sizes = sorted({len(b) for b in batch_indices(distributed.shard_epoch(self.split.train), self.per_process)})
        kept = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
        try:
            for n in sizes:
                with runtime.autocast(self.device):
                    loss = compiled(self.batch(self.stand_in(n), torch.arange(n)))["loss"]
                loss.backward()
        except Exception as e:  # noqa: BLE001 - whatever torch.compile raises, training can go on without it
            reason = (str(e).strip().splitlines() or [""])[0][:200]
            self.callbacks.note(f"--compile: torch.compile failed on this model ({type(e).__name__}: {reason}); "
                                "training without it")  # fmt: skip
            compiled = step_loss
        finally:
            self.model.load_state_dict(kept)  # in place: the optimizer keeps its tensors
            self.optimizer.zero_grad(set_to_none=True)
        return compiled

    def stand_in(self, n: int = 2) -> torch.Tensor:
        """n blank model-sized images: for a process whose whole batch failed to load (DDP needs every
        process to step), and for the trial of a compiled step."""
        c, s = self.config.channels, self.config.image_size
        return torch.zeros(n, c, s, s, device=self.device)

    @contextmanager
    def frozen_statistics(self, blank: bool) -> Iterator[None]:
        """BatchNorm in eval mode while a blank stand-in goes through the model (blank=True).

        In training mode it would fold the blanks into its running statistics (a variance pulled
        towards zero), and those of rank 0 are the ones every process validates with and saves.
        """
        norms = [m for m in self.model.modules() if blank and isinstance(m, _BatchNorm) and m.training]
        for norm in norms:
            norm.eval()
        try:
            yield
        finally:
            for norm in norms:
                norm.train()

    def save(self, position: dict[str, float], wait: bool = False) -> None:
        """The model file as it stands, and where training is (rank 0 writes).

        Adam's state (twice the weights) is kept while the run can still be resumed; a finished
        file holds weights, config and calibration only, unless --keep-optimizer asks for more.
        On an accelerator an epoch's file is written in the background while the next epoch
        trains, one at a time; wait=True (and the end of fit) waits until it is on disk.
        """
        finished = position["epoch"] >= self.tc.epochs
        optimizer = {"state_dict": self.optimizer.state_dict(), "position": position}
        if distributed.leader():
            state = modelfile.snapshot(
                self.model, self.tc, self.history.as_dict(self.tc.epochs), self.calibration,
                self.latent_stats, None if finished and not self.tc.keep_optimizer else optimizer,
            )  # fmt: skip
            if self.device.type == "cpu":
                modelfile.write(self.out, state)
            else:
                self.checkpoints.submit(modelfile.write, self.out, state)
        if wait or finished:
            self.saved()

    def saved(self) -> None:
        """Wait for the file being written in the background; its error, if it failed, is raised here."""
        self.checkpoints.close()
        self.checkpoints = Writer(depth=1)


def adam(model: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam; on CUDA its fused kernel, one launch a step for every parameter instead of several."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True if device.type == "cuda" else None)


def same_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Adam's state in its parameters' memory layouts: a resumed run's, read from the file in the
    plain one, would otherwise meet channels-last parameters in the fused kernel, which wants them alike."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def resume_settings(previous: modelfile.ModelFile, overrides: dict[str, Any]) -> Settings:
    """The settings stored in a model file, with only those RESUME_MAY_CHANGE taken from flags."""
    from aecli.config import RESUME_MAY_CHANGE

    train = previous.train_config or TrainConfig()
    for key, value in overrides.items():
        if value is None or key in RESUME_MAY_CHANGE:
            continue
        stored = getattr(previous.config, key, getattr(train, key, None))
        if value != stored:
            raise UsageError(
                f"--resume continues {previous.path} as it was trained; {key} cannot change ({stored} there)"
            )
    changes = {k: overrides[k] for k in RESUME_MAY_CHANGE if overrides.get(k) is not None}
    return Settings(previous.config, train.replace(**changes))


def _round(value: float) -> float:
    return float(f"{value:.6g}")


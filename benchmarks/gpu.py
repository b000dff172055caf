"""GPU throughput of `ae train` and `ae encode` against bare PyTorch loops on the same device (issue 17).

Training: Fashion-MNIST (60k images: 54k train, 6k held out), the seed `ae` model, batches of 128
and 512. `fit` is called in-process as the CLI calls it, with preload yes, preload no (streaming
through the DataLoader), channels_last and compile; the baseline is a bare loop with the images
already on the device as float, bf16 autocast, Adam, no per-step host sync and a forward pass
over the held-out images each epoch. Both count epochs 2..E only, so start-up, the first epoch's
cuDNN tuning and torch.compile's warm-up are left out. ae's window runs from the loss it reads
back at the last step of epoch 1 to that of epoch E, so it includes its per-epoch validation pass
and atomic save. E is --epochs at batch 128 and twice that at 512, so each timed window lasts a
second or more. Target: ae/bare >= 0.90. The unet denoiser's images/s is reported beside them.

Encoding: 10,000 256x256 JPEG crops of scikit-image's sample photographs through a colour model at
64x64: `encode` in-process (and the whole `ae encode` command, for context) against a bare loop
that decodes batches of 256 on the GPU (nvJPEG), resizes and encodes under bf16 (target ae/bare
>= 0.85); then its stages (reading the files, decoding, encoding) one at a time, to show which
one the pipeline waits on; then the same `encode` on the CPU.

    python benchmarks/gpu.py [--out DIR] [--device cuda|cpu] [--budget 300] [--epochs 4] [--quick] [--jpegs N]

Each section is time-boxed within --budget seconds; compile runs last, and not with under 90 s
left. Rows are printed as they come and kept in DIR/gpu_results.json and DIR/gpu_results.md, so
a run cut short keeps what it measured. GPU utilisation is sampled every 50 ms (NVML, else
nvidia-smi). --quick: 2,000 training images, 2 epochs and 300 JPEGs, to try it on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from _common import ROOT, fashion_mnist
from aecli import __version__ as aecli_version
from aecli import runtime
from aecli.config import ModelConfig, TrainConfig, load_settings
from aecli.data import loader, open_inputs
from aecli.errors import AecliError, Interrupted
from aecli.infer import Progress, encode, load_model
from aecli.io import modelfile
from aecli.models import create_model
from aecli.train import Callbacks, fit

TRAIN_TARGET, ENCODE_TARGET = 0.90, 0.85
COMPILE_NEEDS = 90  # seconds: torch.compile's warm-up alone can take 30-60 s
CROP, MODEL_SIZE = 256, 64
# photographs shipped inside scikit-image's wheel (others need a download, which the GPU machine cannot make)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "brick", "grass", "gravel",
          "immunohistochemistry", "clock", "cell", "hubble_deep_field", "retina")  # fmt: skip

COLUMNS = {  # (header, key) per section, for the Markdown tables and the printed lines
    "environment": (("item", "row"), ("value", "value")),
    "training": (
        ("row", "row"), ("batch", "batch"), ("images/s", "images_per_s"), ("bare images/s", "bare_images_per_s"),
        ("ae/bare", "ratio"), ("target", "target"), ("GPU util %", "gpu_util"), ("epochs timed", "epochs_timed"),
        ("wall s", "wall_s"), ("note", "note"),
    ),
    "encoding": (
        ("row", "row"), ("images", "images"), ("images/s", "images_per_s"), ("bare images/s", "bare_images_per_s"),
        ("ae/bare", "ratio"), ("target", "target"), ("GPU util %", "gpu_util"), ("wall s", "wall_s"),
        ("note", "note"),
    ),
}  # fmt: skip


class Results:
    """Rows as they come: printed, and both files rewritten whole after each, so nothing waits for the end."""

    def __init__(self, out: Path):
        self.out, self.rows = out, []

    def add(self, section: str, **row) -> None:
        row = {"section": section, **row}
        if row.get("error"):
            row["note"] = f"{row.get('note') or ''} error: {row['error']}".strip()
        self.rows.append(row)
        cells = [f"{h}: {_cell(row.get(k))}" for h, k in COLUMNS[section] if row.get(k) not in (None, "")]
        print(f"[{section}] " + " | ".join(cells), flush=True)
        (self.out / "gpu_results.json").write_text(json.dumps(self.rows, indent=1, default=str) + "\n")
        (self.out / "gpu_results.md").write_text(self.markdown())

    def markdown(self) -> str:
        lines = []
        for section, columns in COLUMNS.items():
            rows = [r for r in self.rows if r["section"] == section]
            if not rows:
                continue
            lines += [f"## {section}", "", "| " + " | ".join(h for h, _ in columns) + " |"]
            lines.append("|" + "---|" * len(columns))
            lines += ["| " + " | ".join(_cell(r.get(k)).replace("|", "/") for _, k in columns) + " |" for r in rows]
            lines.append("")
        return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}" if value < 10 else f"{value:.1f}"
    return str(value)


class GpuMonitor:
    """GPU utilisation sampled every 50 ms in the background, averaged over a window afterwards."""

    def __init__(self, device: torch.device):
        self.samples: list[tuple[float, float]] = []
        self.source = "n/a"
        self._halt = threading.Event()
        self._process: subprocess.Popen | None = None
        if device.type != "cuda":
            return
        index = device.index if device.index is not None else torch.cuda.current_device()
        target = self._nvml(index) or self._nvidia_smi(index)
        if target is not None:
            threading.Thread(target=target, daemon=True).start()

    def _nvml(self, index: int):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetUtilizationRates(handle)
        except Exception:
            return None
        self.source = "NVML"

        def poll() -> None:
            while not self._halt.wait(0.05):
                self.samples.append((time.perf_counter(), float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)))

        return poll

    def _nvidia_smi(self, index: int):
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "50"]
        try:
            self._process = subprocess.Popen(
                [*query, "-i", str(index)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        except OSError:
            return None
        self.source = "nvidia-smi"

        def read() -> None:
            for line in self._process.stdout:
                try:
                    self.samples.append((time.perf_counter(), float(line.strip())))
                except ValueError:
                    pass

        return read

    def mean(self, start: float, end: float) -> float | str:
        values = [v for t, v in list(self.samples) if start <= t <= end]
        return round(sum(values) / len(values), 1) if values else "n/a"

    def close(self) -> None:
        self._halt.set()
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=5)


class Clock:
    """The run's deadline (--budget)."""

    def __init__(self, budget: float):
        self.end = time.perf_counter() + budget

    def left(self, until: float | None = None) -> float:
        return min(self.end, until or self.end) - time.perf_counter()


class TimeBox:
    """A section's rows, each given what is left of the section's seconds (and of the run), at most
    `cap`; a failure is recorded as the row's error and the next row goes on."""

    def __init__(self, results: Results, section: str, clock: Clock, seconds: float | None = None):
        self.results, self.section, self.clock = results, section, clock
        self.until = None if seconds is None else time.perf_counter() + seconds

    skip: tuple[str, ...] = ()  # --skip: rows whose label holds one of these are left out

    def row(self, label: str, cap: float, measure, **fixed) -> dict:
        if any(word in label for word in self.skip):
            return {}
        limit = min(cap, self.clock.left(self.until) - 2)
        if limit < 5:
            self.results.add(self.section, row=label, **fixed, note="skipped: its time box is spent")
            return {}
        try:
            row = {"row": label, **fixed, **measure(limit)}
        except Exception as e:
            row = {"row": label, **fixed, "error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"}
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.results.add(self.section, **row)
        return row


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- training ---------------------------------------------------------------------------------


class EpochTimer(Callbacks):
    """When ae read back the loss at the last step of each epoch, and how many images each epoch trained.

    On an accelerator step() comes only when the loss is read back (and always at an epoch's last
    step), with the images since the previous call, so only the epochs' ends are compared.
    """

    def __init__(self):
        self.steps, self.ends, self.images = 0, {}, {}

    def start(self, epochs: int, steps: int, first_epoch: int, first_step: int) -> None:
        self.steps = steps

    def step(self, epoch: int, step: int, losses: dict, images: int, lr: float) -> None:
        self.images[epoch] = self.images.get(epoch, 0) + images
        if step == self.steps - 1:
            self.ends[epoch] = time.perf_counter()

    def window(self) -> tuple[int, float, float, int] | None:
        """Images trained in epochs 2..k, the times of the ends of epochs 1 and k, and k - 1; k: the
        last epoch that finished (all of them, unless the time box stopped the run)."""
        if 0 not in self.ends or len(self.ends) < 2:
            return None
        last = max(self.ends)
        return sum(self.images[e] for e in range(1, last + 1)), self.ends[0], self.ends[last], last


def time_ae(images, overrides: dict, batch: int, epochs: int, device: str, out: Path, limit: float):
    """fit() as `ae train` calls it, stopped through its `stop` event at `limit` seconds."""
    settings = load_settings(
        None, {"epochs": epochs, "batch_size": batch, "device": device, "preload": "yes", "val_split": 0.1, **overrides}
    )
    if settings.ignored:  # load_settings passes over names it does not declare
        raise RuntimeError(f"not a setting here: {', '.join(settings.ignored)}")
    timer, stop = EpochTimer(), threading.Event()
    alarm = threading.Timer(max(limit, 1), stop.set)
    alarm.start()
    note, started = "", time.perf_counter()
    try:
        fit(images, settings, out, callbacks=timer, stop=stop)
    except Interrupted:
        note = f"stopped at its {limit:.0f} s time box"
    finally:
        alarm.cancel()
    wall = time.perf_counter() - started
    window = timer.window()
    if window is None:
        raise RuntimeError(f"{note or 'finished'} before a second epoch ended ({wall:.0f} s)")
    return window, wall, note


def time_bare(x: torch.Tensor, batch: int, epochs: int, device: torch.device, limit: float, val_split: float = 0.1):
    """The bare loop: ae's model, split sizes and Adam; the images on the device as float; no host sync
    inside an epoch. Returns (images in epochs 2..k, start, end, k - 1) as EpochTimer.window does."""
    started = time.perf_counter()
    torch.manual_seed(0)
    model = create_model(ModelConfig(variant="ae").resolved(1, 28)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = x.to(device)
    n_val = int(len(x) * val_split)
    order = torch.randperm(len(x))
    train, val = order[n_val:], order[:n_val]
    val_on_device = val.to(device)
    ends = []
    for _ in range(epochs):
        model.train()
        shuffle = train[torch.randperm(len(train))]
        on_device = shuffle.to(device)
        for i in range(0, len(shuffle), batch):
            with runtime.autocast(device):
                loss = model.loss({"images": data[on_device[i : i + batch]], "index": shuffle[i : i + batch]})["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        total = torch.zeros((), device=device)
        with torch.no_grad(), runtime.autocast(device):
            for i in range(0, n_val, batch):
                part = {"images": data[val_on_device[i : i + batch]], "index": val[i : i + batch]}
                total += model.loss(part)["loss"].float()
        sync(device)
        ends.append(time.perf_counter())
        if ends[-1] - started > limit:
            break
    if len(ends) < 2:
        raise RuntimeError(f"the time box ({limit:.0f} s) ended before a second epoch")
    k = len(ends) - 1
    return len(train) * k, ends[0], ends[-1], k, time.perf_counter() - started


def training_data(quick: bool, work: Path):
    """The images as float tensors for the bare loop, and as an ImageSet for ae: the same ones."""
    try:
        x, _ = fashion_mnist("train")
    except SystemExit as e:  # _common's message when there is no local copy: this section fails, not the run
        raise RuntimeError(str(e)) from None
    if not quick:
        return x, open_inputs(["fashion-mnist"])
    x = x[:2000]
    np.save(work / "fmnist2000.npy", x[:, 0].mul(255).round().to(torch.uint8).numpy())
    return x, open_inputs([str(work / "fmnist2000.npy")])


def training_rows(args, clock: Clock, results: Results, monitor: GpuMonitor, work: Path, compiled: bool) -> None:
    """The bare loop and ae's variants at each batch size, then the unet; compiled=True: the compile rows alone."""
    x, images = training_data(args.quick, work)
    device = runtime.choose_device(args.device)
    box = TimeBox(results, "training", clock, None if compiled else 0.45 * args.budget)
    variants = {"ae": {}, "ae preload=no": {"preload": "no"}, "ae channels_last=no": {"channels_last": "no"}}
    if compiled:
        variants = {"ae compile": {"compile": True}}

    def epochs(batch: int) -> int:
        return args.epochs * (2 if batch >= 512 else 1)  # a timed window of a second or more on an H100

    def ae_row(overrides: dict, batch: int, bare: float | None, limit: float) -> dict:
        out = work / "train.safetensors"
        window, wall, note = time_ae(images, overrides, batch, epochs(batch), args.device, out, limit)
        count, start, end, timed = window
        rate = count / (end - start)
        row = {"images_per_s": rate, "gpu_util": monitor.mean(start, end), "epochs_timed": timed, "wall_s": wall}
        if bare:
            row.update(bare_images_per_s=bare, ratio=round(rate / bare, 3), target=f">= {TRAIN_TARGET}")
        return {**row, "note": "; ".join(filter(None, [note, "incl. validation + save per epoch"]))}

    def bare_row(batch: int, limit: float) -> dict:
        count, start, end, timed, wall = time_bare(x, batch, epochs(batch), device, limit)
        return {"images_per_s": count / (end - start), "gpu_util": monitor.mean(start, end), "epochs_timed": timed,
                "wall_s": wall, "note": "data on the device, no per-step sync"}  # fmt: skip

    if not compiled:  # the first training in a process pays for CUDA's start-up: no timed row should
        with contextlib.suppress(Exception):
            time_bare(x[:4096], 128, 2, device, 30)
    for batch in (128, 512):
        if not compiled:
            box.row(f"bare loop b{batch}", 45, lambda limit: bare_row(batch, limit), batch=batch)
        bare = next((r.get("images_per_s") for r in results.rows if r.get("row") == f"bare loop b{batch}"), None)
        for label, overrides in variants.items():
            if compiled and clock.left() < COMPILE_NEEDS:
                note = f"skipped: {clock.left():.0f} s left, under {COMPILE_NEEDS} s"
                results.add("training", row=f"{label} b{batch}", batch=batch, note=note)
                continue
            cap = 120 if compiled else 45
            box.row(f"{label} b{batch}", cap, lambda limit: ae_row(overrides, batch, bare, limit), batch=batch)
    if not compiled:
        unet = {"variant": "denoising", "arch": "unet"}
        box.row("ae unet denoiser b128", 45, lambda limit: ae_row(unet, 128, None, limit), batch=128)


# --- encoding ---------------------------------------------------------------------------------

_photos: list[np.ndarray] = []


def load_photos() -> list[str]:
    """The bundled sample photographs at least CROP on each side, as RGB; their names."""
    import skimage.data

    names = []
    for name in PHOTOS:
        try:
            photo = np.asarray(getattr(skimage.data, name)())
        except Exception:  # not bundled with this version, or needs a download
            continue
        if photo.dtype != np.uint8 or min(photo.shape[:2]) < CROP:
            continue
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=-1)
        _photos.append(np.ascontiguousarray(photo[..., :3]))
        names.append(name)
    return names


def _write_jpegs(task: tuple[Path, int, int]) -> int:
    """Random CROPxCROP crops (half of them mirrored) of the photos, JPEG quality 90, seeded by position."""
    from PIL import Image

    if not _photos:  # a start method other than fork: each process loads them itself
        load_photos()
    directory, start, stop = task
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        photo = _photos[i % len(_photos)]
        y, x = (int(rng.integers(0, s - CROP + 1)) for s in photo.shape[:2])
        crop = photo[y : y + CROP, x : x + CROP]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop)).save(directory / f"{i:05d}.jpg", quality=90)
    return stop - start


def make_jpegs(directory: Path, count: int) -> tuple[list[str], float]:
    """Run before CUDA starts, so the pool may fork."""
    started = time.perf_counter()
    names = load_photos()
    if not names:
        raise RuntimeError("no scikit-image sample photograph could be loaded")
    directory.mkdir(parents=True, exist_ok=True)
    tasks = [(directory, i, min(i + 250, count)) for i in range(0, count, 250)]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with multiprocessing.get_context(method).Pool(os.cpu_count()) as pool:
        sum(pool.imap_unordered(_write_jpegs, tasks))
    return names, time.perf_counter() - started


class TimeUp(Exception):
    pass


class Counted(Progress):
    """Counts the images encoded; past the deadline it ends the pass, and the rate so far stands.

    advance() comes before a batch is handed over, so the images counted are those already encoded.
    """

    def __init__(self, deadline: float):
        self.count, self.deadline = 0, deadline

    def advance(self, count: int) -> None:
        if time.perf_counter() > self.deadline:
            raise TimeUp
        self.count += count


def colour_model(path: Path) -> None:
    """An untrained colour ae at MODEL_SIZE: the weights do not change the speed, and a file needs no training."""
    torch.manual_seed(0)
    model = create_model(ModelConfig(variant="ae").resolved(3, MODEL_SIZE))
    modelfile.save(path, model, TrainConfig(), {"epochs": 1, "epochs_planned": 1, "complete": True})


def time_encode(model: Path, directory: Path, device: str, deadline: float):
    """`encode` in-process after a warm-up pass; (images, seconds, latents or None, window, cut short)."""
    loaded = load_model(model, device)
    warm = sorted(str(p) for p in directory.iterdir())[:512]
    encode(loaded, open_inputs(warm), batch_size=256)
    sync(loaded.device)
    progress, latents = Counted(deadline), None
    started = time.perf_counter()
    try:
        latents = encode(loaded, open_inputs([str(directory)]), batch_size=256, progress=progress)
        count = len(latents.vectors)
    except TimeUp:
        count = progress.count
    sync(loaded.device)
    ended = time.perf_counter()
    return count, ended - started, latents, (started, ended), latents is None


def time_bare_encode(model: Path, directory: Path, device: torch.device, deadline: float):
    """Files read into uint8 tensors, nvJPEG decoding batches of 256 on the device, a bilinear
    antialiased resize (the crops are square: ae's pad mode is a plain resize), encode under bf16."""
    from torchvision.io import decode_jpeg, read_file

    net = modelfile.load(model).model.to(device)

    def run(paths: list[Path], until: float) -> tuple[torch.Tensor, int]:
        rows, count = [], 0
        with torch.no_grad():
            for start in range(0, len(paths), 256):
                data = [read_file(str(p)) for p in paths[start : start + 256]]
                pixels = torch.stack(decode_jpeg(data, device=device)).float().div_(255)
                x = torch.nn.functional.interpolate(
                    pixels, size=(MODEL_SIZE, MODEL_SIZE), mode="bilinear", antialias=True, align_corners=False
                )
                with runtime.autocast(device):
                    rows.append(net.encode(x))
                count += len(data)
                if time.perf_counter() > until:
                    break
        return torch.cat(rows).cpu(), count

    run(sorted(directory.iterdir())[:512], deadline)  # warm-up: nvJPEG and cuDNN
    sync(device)
    started = time.perf_counter()
    z, count = run(sorted(directory.iterdir()), deadline)
    ended = time.perf_counter()
    return count, ended - started, z, (started, ended)


def one_reading_thread(measure):
    """`measure` with data.loader.READ_AHEAD off: the thread that decodes JPEGs on the device reads
    the files too, as before issue 17's third session, for the same run to say which is faster."""

    def measured(limit: float) -> dict:
        loader.READ_AHEAD = False
        try:
            return measure(limit)
        finally:
            loader.READ_AHEAD = True

    return measured


class Stages:
    """ae encode's three stages timed one at a time on the same files, each after the one before,
    so the pipeline's rate can be set against them: near the slowest stage, they overlap; near
    1 / (sum of 1 / rate), they run in turn. Rows "stage: ..." in the encoding table."""

    def __init__(self, model: Path, directory: Path, device: torch.device):
        self.loaded = load_model(model, str(device))
        self.images = open_inputs([str(directory)])
        cfg = self.loaded.config
        self.fit = (cfg.channels, cfg.image_size, cfg.resize, True)
        self.read, self.decoded, self.host_share = [], [], 0.0

    def _timed(self, items, work, deadline: float) -> tuple[int, float]:
        """(items done, seconds). The stage's host share (its thread's CPU time over the wall time; near 1:
        the host is the limit) is kept for its row's note."""
        count, started, cpu = 0, time.perf_counter(), time.thread_time()
        for item in items:
            count += work(item)
            if time.perf_counter() > deadline:
                break
        sync(self.loaded.device)
        seconds = time.perf_counter() - started
        self.host_share = (time.thread_time() - cpu) / seconds
        return count, seconds

    def _row(self, count: int, seconds: float, what: str) -> dict:
        note = f"{what}; host share {self.host_share:.2f}"
        return {"images": count, "images_per_s": count / seconds, "wall_s": seconds, "note": note}

    def bare_reading(self, limit: float) -> dict:
        """What the bare loop does per file: torchvision's read_file, and no checks."""
        from torchvision.io import read_file

        paths = [str(self.images.path(i)) for i in range(len(self.images))]
        count, seconds = self._timed(paths, lambda path: len(read_file(path)) and 1, time.perf_counter() + limit)
        return self._row(count, seconds, "read_file (the bare loop's)")

    def reading(self, limit: float) -> dict:
        """Files to bytes and header checks (gpu_jpeg.read): host work only."""
        from aecli.data import batch_indices
        from aecli.data.gpu_jpeg import read

        def one(rows) -> int:
            self.read.append(read(self.images, rows, *self.fit))
            return len(rows)

        count, seconds = self._timed(batch_indices(np.arange(len(self.images)), 256), one, time.perf_counter() + limit)
        return self._row(count, seconds, "gpu_jpeg.read")

    def decoding(self, limit: float) -> dict:
        """The batches read above, decoded and fitted on the device (gpu_jpeg.decode)."""
        from aecli.data.gpu_jpeg import decode

        def one(encoded) -> int:
            self.decoded.append(decode(encoded, self.images, self.loaded.device, *self.fit).pixels)
            return len(self.decoded[-1])

        decode(self.read[0], self.images, self.loaded.device, *self.fit)  # warm-up: nvJPEG's handles
        count, seconds = self._timed(self.read, one, time.perf_counter() + limit)
        return self._row(count, seconds, "gpu_jpeg.decode")

    def encoding(self, limit: float) -> dict:
        """The batches decoded above, encoded under autocast, rows left on the device."""

        def one(x) -> int:
            with torch.no_grad(), runtime.autocast(self.loaded.device):
                self.loaded.model.encode(x)
            return len(x)

        one(self.decoded[0])  # warm-up: cuDNN's choice of kernels
        count, seconds = self._timed(self.decoded, one, time.perf_counter() + limit)
        return self._row(count, seconds, "model.encode")


def stage_rows(box: TimeBox, results: Results, model: Path, jpegs: Path, device: torch.device, ae: dict) -> None:
    stages = Stages(model, jpegs, device)
    bare_read = box.row("stage: bare read", 20, stages.bare_reading).get("images_per_s")
    measures = (("read", stages.reading), ("decode", stages.decoding), ("encode", stages.encoding))
    rates = [box.row(f"stage: {name}", 20, measure).get("images_per_s") for name, measure in measures]
    if bare_read and rates[0]:
        results.add("encoding", row="read: ae/bare", images_per_s=rates[0], bare_images_per_s=bare_read,
                    ratio=round(rates[0] / bare_read, 3), note="host work a file, files in the page cache")  # fmt: skip
    if all(rates) and ae.get("images_per_s"):
        in_turn = 1 / sum(1 / r for r in rates)
        note = (f"stages in turn would give {in_turn:,.0f}/s, fully overlapped {min(rates):,.0f}/s; "
                f"ae's pipeline gives {ae['images_per_s']:,.0f}/s")  # fmt: skip
        results.add("encoding", row="stages against the pipeline", images_per_s=ae["images_per_s"], note=note)


def encoding_rows(args, clock: Clock, results: Results, monitor: GpuMonitor, work: Path, jpegs: Path | None) -> None:
    if jpegs is None:
        raise RuntimeError("no JPEGs to encode (see the row above)")
    box = TimeBox(results, "encoding", clock, 0.3 * args.budget)
    device = runtime.choose_device(args.device)
    n = len(os.listdir(jpegs))
    model = work / "colour64.safetensors"
    colour_model(model)
    latents: dict[str, np.ndarray] = {}

    def ae_side(limit: float, on: str = args.device) -> dict:
        count, seconds, found, (start, end), cut = time_encode(model, jpegs, on, time.perf_counter() + limit)
        if found is not None and on == args.device:
            latents["ae"] = found.vectors
        note = "in-process, after a warm-up pass" + (f"; cut at its {limit:.0f} s time box" if cut else "")
        return {"images": count, "images_per_s": count / seconds, "gpu_util": monitor.mean(start, end),
                "wall_s": seconds, "note": note}  # fmt: skip

    def bare_side(limit: float) -> dict:
        count, seconds, z, (start, end) = time_bare_encode(model, jpegs, device, time.perf_counter() + limit)
        latents["bare"] = z.numpy()
        note = f"decode_jpeg on {device.type}, batches of 256"
        if "ae" in latents and len(latents["ae"]) == len(latents["bare"]):  # the same work on both sides?
            gap = np.abs(latents["ae"] - latents["bare"]).mean() / (float(np.std(latents["bare"])) or 1.0)
            note += f"; latents differ from ae's by {gap:.3f} std (mean)"
        return {"images": count, "images_per_s": count / seconds, "gpu_util": monitor.mean(start, end),
                "wall_s": seconds, "note": note}  # fmt: skip

    def command(limit: float) -> dict:
        line = [sys.executable, "-m", "aecli", "encode", str(jpegs), "-m", str(model), "-o", str(work / "x.npy"),
                "--device", args.device, "-q"]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(line, cwd=ROOT, timeout=limit, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode:
            raise RuntimeError(f"exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}")
        return {"images": n, "images_per_s": n / seconds, "wall_s": seconds,
                "note": "whole command: start-up, model load, encode, write"}  # fmt: skip

    ae = box.row(f"ae encode ({device.type})", 40, ae_side)
    box.row(f"ae encode ({device.type}), files read in the decoding thread", 40, one_reading_thread(ae_side))
    bare = box.row(f"bare loop ({device.type})", 25, bare_side)
    if ae.get("images_per_s") and bare.get("images_per_s"):
        ratio = round(ae["images_per_s"] / bare["images_per_s"], 3)
        results.add("encoding", row=f"ae/bare ({device.type})", images_per_s=ae["images_per_s"],
                    bare_images_per_s=bare["images_per_s"], ratio=ratio, target=f">= {ENCODE_TARGET}")  # fmt: skip
    stage_rows(box, results, model, jpegs, device, ae)
    box.row(f"ae encode command ({device.type})", 45, command)
    box.row("CPU path: ae encode (cpu)", 60, lambda limit: ae_side(limit, "cpu"))


# --- the run ----------------------------------------------------------------------------------


def environment(args, results: Results, photos: list[str]) -> None:
    device = runtime.choose_device(args.device)
    items = {"device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        items.update(gpu=torch.cuda.get_device_name(device), capability=f"{props.major}.{props.minor}",
                     gpu_memory=f"{props.total_memory / 2**30:.1f} GiB", cuda=torch.version.cuda,
                     cudnn=str(torch.backends.cudnn.version()))  # fmt: skip
    items.update(
        torch=torch.__version__, torchvision=torchvision.__version__, python=platform.python_version(),
        cpus=str(os.cpu_count()), torch_threads=str(torch.get_num_threads()), aecli=aecli_version,
        mode="quick" if args.quick else "full", budget_s=str(args.budget), epochs=str(args.epochs),
        photos=", ".join(photos),
    )  # fmt: skip
    for key, value in items.items():
        results.add("environment", row=key, value=value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where the results go (default: a temporary directory)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument("--budget", type=float, default=300, help="seconds for the whole run (default 300)")
    parser.add_argument("--epochs", type=int, help="training epochs per row (default 4; --quick: 2)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: 2,000 training images, 300 JPEGs")
    parser.add_argument("--jpegs", type=int, help="JPEGs to encode (default 10,000; --quick: 300)")
    parser.add_argument("--skip", default="", help="comma-separated words: rows whose label holds one are left out")
    args = parser.parse_args()
    TimeBox.skip = tuple(w.strip() for w in args.skip.split(",") if w.strip())
    args.epochs = args.epochs or (2 if args.quick else 4)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: stop the sampler and clean up on the way out
    try:  # a device that is not there fails now (no CUDA context starts here)
        device = runtime.choose_device(args.device)
    except AecliError as e:
        parser.error(str(e))
    clock = Clock(args.budget)
    out = (args.out or Path(tempfile.mkdtemp(prefix="gpu-bench-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-work-"))
    results = Results(out)
    print(f"results: {out}/gpu_results.json and .md", flush=True)
    monitor = None
    try:
        jpegs, photos = work / "jpegs", []
        count = args.jpegs or (300 if args.quick else 10_000)
        try:  # before anything touches CUDA, so the pool may fork
            photos, took = make_jpegs(jpegs, count)
            print(f"made {count} JPEGs from {len(photos)} photos in {took:.1f} s", flush=True)
        except Exception as e:
            results.add("encoding", row="making the JPEGs", error=f"{type(e).__name__}: {e}")
            jpegs = None
        try:
            environment(args, results, photos)
        except Exception as e:
            results.add("environment", row="error", value=f"{type(e).__name__}: {e}")
        monitor = GpuMonitor(device)
        results.add("environment", row="gpu_util_source", value=monitor.source)
        for name, section in (
            ("training", lambda: training_rows(args, clock, results, monitor, work, compiled=False)),
            ("encoding", lambda: encoding_rows(args, clock, results, monitor, work, jpegs)),
            ("training", lambda: training_rows(args, clock, results, monitor, work, compiled=True)),
        ):
            try:
                section()
            except Exception as e:
                results.add(name, row="section failed", error=f"{type(e).__name__}: {e}")
    finally:
        if monitor is not None:
            monitor.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"done in {args.budget - clock.left():.0f} s; results in {out}", flush=True)


if __name__ == "__main__":
    main()

"""Training images held on the device (--preload): the same model as streaming them, to the bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import blobs, write_pngs

from aecli.config import load_settings
from aecli.data import open_inputs, resident
from aecli.data.inputs import Batch
from aecli.io import modelfile
from aecli.train import fit, loop
from aecli.train.run import Callbacks

FAST = ["--epochs", "3", "--batch-size", "8", "-q"]


def trained_with(run, inputs, preload: str, *more: str) -> dict[str, torch.Tensor]:
    out = f"{preload}.safetensors"
    result = run("train", *inputs, *FAST, "--preload", preload, *more, "-o", out)
    assert result.exit_code == 0, result.stderr
    return modelfile.load(out).model.state_dict()


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("pixels", "variant"),
    [
        (blobs(40), "vae"),  # 8-bit: held as uint8
        (blobs(40).astype(np.float32) / 255 * 0.9 + 0.05, "denoising"),  # not 8-bit: held as float32
        (blobs(40, channels=3), "ae"),  # colour, channels last in the file
    ],
)
def test_preloaded_training_equals_streamed_training(run, tmp_path, pixels, variant):
    np.save(tmp_path / "x.npy", pixels)
    args = (["x.npy"], "--variant", variant)
    assert same(trained_with(run, args[0], "yes", *args[1:]), trained_with(run, args[0], "no", *args[1:]))
    held, streamed = (modelfile.load(f"{mode}.safetensors").training for mode in ("yes", "no"))
    assert held["val_loss"] == streamed["val_loss"]  # a VAE's draws too: a DataLoader's start took one of them


def test_a_folder_with_a_broken_image_preloads_what_loads_and_reports_it_once(run, tmp_path):
    write_pngs(tmp_path / "pngs", blobs(30))
    (tmp_path / "pngs" / "broken.png").write_bytes(b"\x89PNG not really")
    held = run("train", "pngs", *FAST[:-1], "--skip-bad", "--preload", "yes", "-o", "yes.safetensors")
    assert held.exit_code == 0, held.stderr
    assert held.stderr.count("broken.png") == 1
    streamed = trained_with(run, ["pngs"], "no", "--skip-bad")
    assert same(modelfile.load("yes.safetensors").model.state_dict(), streamed)
    assert modelfile.load("yes.safetensors").training["skipped_images"] == 1


def test_a_conditional_model_finds_each_preloaded_image_class(run, tmp_path):
    for k, name in enumerate(["discs", "dim"]):
        write_pngs(tmp_path / "two" / name, (blobs(16, seed=k) * (1 - 0.5 * k)).astype(np.uint8))
    args = ["--variant", "vae", "--condition", "folders"]
    assert same(trained_with(run, ["two"], "yes", *args), trained_with(run, ["two"], "no", *args))


def test_patch_training_streams_whatever_preload_says(run, tmp_path):
    write_pngs(tmp_path / "pngs", blobs(6, size=40))
    patches = ["--patch-size", "16", "--patches-per-image", "4"]
    assert same(trained_with(run, ["pngs"], "yes", *patches), trained_with(run, ["pngs"], "no", *patches))


def test_preload_yes_that_cannot_fit_is_a_one_line_error(run, tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", blobs(40))

    def no_memory(*shape, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40 GiB")

    monkeypatch.setattr(resident.torch, "zeros", no_memory)
    result = run("train", "x.npy", *FAST, "--preload", "yes", "-o", "m.safetensors")
    assert result.exit_code == 2
    assert "--preload yes: 40 images of 1x16x16 do not fit in cpu memory" in result.stderr
    assert "Traceback" not in result.stderr


def test_auto_holds_what_fits_in_a_quarter_of_free_memory(monkeypatch):
    monkeypatch.setattr(resident, "_free_memory", lambda device: 4 * 1000 * 256)
    cpu = torch.device("cpu")
    assert resident.fits(1000, (1, 16, 16), cpu)
    assert not resident.fits(1001, (1, 16, 16), cpu)
    assert not resident.fits(1000, (1, 16, 16), cpu, pixel_bytes=4)
    monkeypatch.setattr(resident, "_free_memory", lambda device: None)  # unknown: stream
    assert not resident.fits(1, (1, 16, 16), cpu)


def test_a_held_set_serves_the_rows_that_loaded_in_the_batches_asked_for():
    held = resident.Resident(6, (1, 2, 2), torch.device("cpu"))
    pixels = torch.arange(6 * 4, dtype=torch.float32).view(6, 1, 2, 2) / 255
    streamed = [Batch(pixels[[0, 1, 2]], torch.tensor([0, 1, 2])), Batch(pixels[[3, 5]], torch.tensor([3, 5]), ["4 broke"])]
    asked = [np.array([0, 1, 2]), np.array([3, 4, 5])]
    assert [len(b.index) for b in held.fill(asked, streamed)] == [3, 2]
    assert held.complete and held.pixels.dtype == torch.uint8
    served = list(held.stream([np.array([5, 4, 0])]))
    assert served[0].index.tolist() == [5, 0]
    assert torch.equal(served[0].pixels, pixels[[5, 0]])


def test_an_accelerator_reads_its_losses_a_few_times_a_second_the_cpu_every_step(monkeypatch):
    clock = iter(np.arange(0, 10, 0.03))
    monkeypatch.setattr(loop.time, "perf_counter", lambda: float(next(clock)))
    window = loop.LossWindow(torch.device("cuda"))  # only its kind is asked: no GPU needed
    due = []
    for step in range(8):
        window.add({"loss": torch.tensor(float(step))}, 2)
        due.append(window.due(step == 7))
        if due[-1]:
            losses, images = window.read()
    assert due == [False, False, False, True, False, False, False, True]
    assert images == 8 and losses["loss"] == pytest.approx((4 + 5 + 6 + 7) / 4)
    cpu = loop.LossWindow(torch.device("cpu"))
    cpu.add({"loss": torch.tensor(1.0)}, 1)
    assert cpu.due(False)


def test_channels_last_and_compile_train_and_say_so(run, tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", blobs(40))
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda f, **options: compiled.append(f) or f)  # the real one takes seconds
    result = run("train", "x.npy", *FAST, "--channels-last", "yes", "--compile", "-o", "m.safetensors")
    assert result.exit_code == 0, result.stderr
    assert len(compiled) == 1
    stored = modelfile.load("m.safetensors").train_config
    assert stored.channels_last == "yes" and stored.compile


class _Layouts(Callbacks):
    def __init__(self):
        self.alike = []

    def saved(self, epoch, run):
        state = run.optimizer.state
        self.alike.append(all(state[p]["exp_avg"].stride() == p.stride() for p in run.model.parameters()))


def test_a_resumed_channels_last_run_keeps_adams_state_in_its_parameters_layout(tmp_path):
    np.save(tmp_path / "x.npy", blobs(40))
    images = open_inputs([str(tmp_path / "x.npy")])
    first = {"epochs": 1, "batch_size": 8, "channels_last": "yes", "keep_optimizer": True}
    fit(images, load_settings(None, first), tmp_path / "m.safetensors")
    layouts = _Layouts()
    resume = modelfile.load(tmp_path / "m.safetensors", with_optimizer=True)
    fit(images, load_settings(None, {**first, "epochs": 2}), tmp_path / "m.safetensors", resume=resume, callbacks=layouts)
    assert layouts.alike == [True]  # CUDA's fused Adam refuses state and parameters of different strides

"""`ae train` through the real CLI: every variant on every kind of input, config, resume, errors."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from aecli.io import modelfile
from aecli.config import load_settings
from aecli.data import open_inputs
from aecli.errors import Interrupted
from aecli.models import list_variants
from aecli.train import Callbacks, fit
from tests.conftest import blobs, write_pngs

FAST = ["--epochs", "1", "--batch-size", "8", "-q"]


@pytest.mark.parametrize("variant", list_variants())
@pytest.mark.parametrize("kind", ["pngs", "npy", "idx", "sample"])
def test_every_variant_trains_on_every_kind_of_input(run, variant, kind, png_dir, npy_file, idx_file):
    source = {"pngs": png_dir, "npy": npy_file, "idx": idx_file, "sample": "sample:class=1"}[kind]
    size = ["--image-size", "12"] if kind == "sample" else []
    result = run("train", source, "--variant", variant, "-o", "m.safetensors", *FAST, *size)
    assert result.exit_code == 0, result.stderr
    loaded = modelfile.load("m.safetensors")
    assert loaded.config.variant == variant
    assert loaded.config.image_size == (12 if kind == "sample" else 16)
    assert loaded.training["complete"] and len(loaded.training["train_loss"]) == 1
    assert loaded.calibration["split"] == "validation"
    assert len(loaded.calibration["metrics"]["mse"]["quantiles"]) == 1001
    assert len(loaded.latent_stats["mean"]) == math.prod(loaded.model.capabilities.latent_shape)


def test_training_reduces_the_loss_and_writes_a_preview(run, npy_file):
    result = run("train", npy_file, "--epochs", "4", "--batch-size", "4", "--preview", "p.png", "-o", "ae.safetensors")
    assert result.exit_code == 0, result.stderr
    losses = modelfile.load("ae.safetensors").training["train_loss"]
    assert losses[-1] < losses[0]
    from PIL import Image

    assert Image.open("p.png").size[0] > 16
    assert "model: ae.safetensors" in result.stderr
    assert result.stdout == ""  # talk goes to stderr only


def test_small_data_trains_enough_steps_unless_epochs_are_given(run, npy_file):
    def trained(*flags):
        result = run("train", npy_file, "--batch-size", "32", "-o", "m.safetensors", *flags)
        assert result.exit_code == 0, result.stderr
        return result.stderr, modelfile.load("m.safetensors")

    said, model = trained("--min-steps", "12")  # 24 images, 22 to train: one step an epoch
    assert len(model.training["train_loss"]) == 12 and model.train_config.epochs == 12
    assert "22 training images make 1 step an epoch: training 12 epochs, not 10" in said
    said, model = trained("--epochs", "2")  # asked for: as given, and the file says why
    assert len(model.training["train_loss"]) == 2 and model.train_config.min_steps == 0
    assert "an epoch" not in said
    _, model = trained("--epochs", "2", "--min-steps", "3")  # both asked for: both hold
    assert len(model.training["train_loss"]) == 3


def test_default_output_name_follows_the_variant(run, npy_file, tmp_path):
    assert run("train", npy_file, "--variant", "vae", *FAST).exit_code == 0
    assert (tmp_path / "vae.safetensors").is_file()


def test_colour_images_give_a_three_channel_model_unless_asked(run, tmp_path):
    write_pngs(tmp_path / "rgb", blobs(10, size=12, channels=3))
    assert run("train", tmp_path / "rgb", "-o", "c.safetensors", *FAST).exit_code == 0
    assert modelfile.load("c.safetensors").config.channels == 3
    assert run("train", tmp_path / "rgb", "--channels", "1", "-o", "g.safetensors", *FAST).exit_code == 0
    assert modelfile.load("g.safetensors").config.channels == 1


def test_mixed_sizes_are_resized_or_rejected_with_no_resize(run, tmp_path):
    write_pngs(tmp_path / "mixed", blobs(6, size=16))
    write_pngs(tmp_path / "mixed", blobs(6, size=20), prefix="big")
    assert run("train", tmp_path / "mixed", "-o", "m.safetensors", *FAST).exit_code == 0
    result = run("train", tmp_path / "mixed", "--image-size", "16", "--exact-size", "-o", "m.safetensors", *FAST)
    assert result.exit_code == 1
    assert "20x20" in result.stderr and "--exact-size" in result.stderr


def test_yaml_config_with_flags_overriding_it(run, npy_file, tmp_path):
    (tmp_path / "c.yaml").write_text("variant: vae\nlatent-dim: 4\nbeta: 0.5\nepochs: 1\n")
    result = run("train", "--config", tmp_path / "c.yaml", "--latent-dim", "6", "--print-config")
    assert result.exit_code == 0
    printed = result.stdout
    assert "variant: vae" in printed and "latent_dim: 6" in printed and "beta: 0.5" in printed
    assert run("train", npy_file, "--config", tmp_path / "c.yaml", "-q", "-o", "v.safetensors").exit_code == 0
    assert modelfile.load("v.safetensors").config.latent_dim == 4


def test_unknown_yaml_key_is_named(run, tmp_path):
    (tmp_path / "c.yaml").write_text("variant: ae\nlatnet_dim: 4\n")
    result = run("train", "sample", "--config", tmp_path / "c.yaml")
    assert result.exit_code == 2
    assert "unknown key 'latnet_dim'" in result.stderr


def test_inputs_from_files_from_stdin_and_globs_keep_their_order(run, png_dir):
    listing = "\n".join(str(p) for p in sorted(png_dir.glob("*.png"))[:10])
    assert run("train", "--files-from", "-", "-o", "a.safetensors", *FAST, input=listing).exit_code == 0
    assert modelfile.load("a.safetensors").training["data"]["images"] == 10
    assert run("train", str(png_dir / "img00*.png"), "-o", "b.safetensors", *FAST).exit_code == 0
    assert modelfile.load("b.safetensors").training["data"]["images"] == 10


def _weights(path):
    return modelfile.load(path).model.state_dict()


def test_resume_extends_a_finished_run_and_knows_when_it_is_done(run, npy_file):
    args = ["train", npy_file, "--batch-size", "8", "-q", "-o", "m.safetensors"]
    assert run(*args, "--epochs", "1", "--keep-optimizer").exit_code == 0
    assert run(*args, "--epochs", "2", "--resume").exit_code == 0
    assert len(modelfile.load("m.safetensors").training["train_loss"]) == 2
    again = run(*args, "--epochs", "2", "--resume")
    assert again.exit_code == 2 and "already trained for 2 epochs" in again.stderr


def test_resume_refuses_to_change_the_model(run, npy_file):
    assert run("train", npy_file, *FAST, "-o", "m.safetensors").exit_code == 0
    result = run("train", npy_file, "--resume", "--latent-dim", "3", "--epochs", "2", "-o", "m.safetensors")
    assert result.exit_code == 2 and "latent_dim cannot change" in result.stderr


def test_resume_refuses_other_inputs(run, npy_file, tmp_path):
    """The stored split and position index the images: another set would be trained on silently."""
    args = ["train", "--batch-size", "8", "-q", "-o", "m.safetensors"]
    assert run(*args, npy_file, "--epochs", "1", "--keep-optimizer").exit_code == 0
    np.save(tmp_path / "fewer.npy", blobs(5))
    result = run(*args, "fewer.npy", "--epochs", "2", "--resume")
    assert result.exit_code == 2 and "these inputs hold 5; resume on the same inputs" in result.stderr


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--lr", "nan"], "lr must be a finite number"),
        (["--val-split", "nan"], "val_split must be a finite number"),
        (["--variant", "vae", "--beta", "inf"], "beta must be a finite number"),
        (["--variant", "draem", "--anomaly-fraction", "nan"], "anomaly_fraction must be a finite number"),
        (["--config", "NPY"], "not a YAML config"),
    ],
)
def test_non_finite_settings_and_a_binary_config_are_usage_errors(run, npy_file, flags, says):
    flags = [str(npy_file) if flag == "NPY" else flag for flag in flags]
    result = run("train", npy_file, *FAST, "-o", "m.safetensors", *flags)
    assert result.exit_code == 2 and says in result.stderr, result.stderr


def test_every_unreadable_image_is_reported_once_wherever_the_split_puts_it(run, tmp_path):
    """Those that fell in the validation split were dropped without a word."""
    folder = tmp_path / "some-bad"
    write_pngs(folder, blobs(30))
    for k in range(10):
        (folder / f"bad{k}.png").write_text("not a png")
    result = run("train", folder, "--epochs", "2", "--batch-size", "8", "--skip-bad", "-o", "m.safetensors")
    assert result.exit_code == 0, result.stderr
    named = re.findall(r"skipped \S*/(bad\d)\.png:", result.stderr)
    assert sorted(named) == [f"bad{k}" for k in range(10)], result.stderr
    assert modelfile.load(tmp_path / "m.safetensors").training["skipped_images"] == 10


def test_images_under_4_pixels_need_an_image_size(run, tmp_path):
    """A 2x2 model trained, then failed on its NaN calibration and left that file behind."""
    np.save(tmp_path / "tiny.npy", blobs(20, size=2))
    result = run("train", "tiny.npy", *FAST, "-o", "m.safetensors")
    assert result.exit_code == 2 and "give --image-size 4 or more" in result.stderr, result.stderr
    assert not (tmp_path / "m.safetensors").exists()
    assert run("train", "tiny.npy", *FAST, "--image-size", "4", "-o", "m.safetensors").exit_code == 0


def test_training_on_nothing_readable_fails_and_writes_no_model(run, tmp_path):
    folder = tmp_path / "half-bad"
    write_pngs(folder, blobs(1))
    (folder / "z.png").write_text("not a png")  # the seed's split makes it the one training image
    result = run("train", folder, *FAST, "--skip-bad", "-o", "m.safetensors")
    assert result.exit_code == 1 and "no training image could be read" in result.stderr, result.stderr
    assert not (tmp_path / "m.safetensors").exists()


class _StopAt(Callbacks):
    def __init__(self, stop: threading.Event, at: int):
        self.stop, self.at = stop, at

    def step(self, epoch, step, losses, images, lr):
        if epoch == 1 and step == self.at:
            self.stop.set()


def test_a_stop_mid_epoch_saves_and_resume_matches_the_whole_run(tmp_path):
    np.save(tmp_path / "x.npy", blobs(40))
    images = open_inputs([str(tmp_path / "x.npy")])
    settings = load_settings(None, {"epochs": 2, "batch_size": 4, "variant": "vae"})
    whole = fit(images, settings, tmp_path / "whole.safetensors")
    stop = threading.Event()
    with pytest.raises(Interrupted, match="epoch 2, step 3"):
        fit(images, settings, tmp_path / "cut.safetensors", callbacks=_StopAt(stop, 2), stop=stop)
    cut = modelfile.load(tmp_path / "cut.safetensors", with_optimizer=True)
    position = cut.optimizer["position"]
    assert {k: position[k] for k in ("epoch", "step", "images")} == {"epoch": 1, "step": 3, "images": 12}
    assert not cut.training["complete"]
    assert cut.calibration is None and cut.latent_stats is None  # calibration comes after the last epoch
    resumed = fit(images, settings, tmp_path / "cut.safetensors", resume=cut)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.latent_stats == whole.latent_stats and resumed.latent_stats["split"] == "train"
    assert resumed.training["train_loss"] == whole.training["train_loss"]  # the cut epoch's mean over all its steps


def test_ctrl_c_saves_exits_130_and_resume_matches_the_uninterrupted_run(run, tmp_path):
    np.save(tmp_path / "x.npy", blobs(64))
    args = ["train", "x.npy", "--epochs", "20", "--batch-size", "4", "--variant", "denoising"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "aecli", *args, "-o", "cut.safetensors"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    for line in proc.stderr:  # blocks until the first epoch is saved: no sleeping
        if line.startswith("epoch 1/20"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, rest
    assert "Error: interrupted" in rest and "--resume" in rest and "Traceback" not in rest
    saved = modelfile.load(tmp_path / "cut.safetensors", with_optimizer=True)
    assert saved.training["epochs"] >= 1 and not saved.training["complete"]

    assert run(*args, "-q", "--resume", "-o", "cut.safetensors").exit_code == 0
    assert run(*args, "-q", "-o", "whole.safetensors").exit_code == 0
    whole, resumed = _weights("whole.safetensors"), _weights("cut.safetensors")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing-dir"], 1, "missing-dir: no such file, directory or dataset"),
        (["sample", "--variant", "gan"], 2, f"unknown variant 'gan' (known: {', '.join(list_variants())})"),
        (["sample", "--loss", "l1"], 2, "unknown loss 'l1'"),
        (["sample", "--device", "tpu"], 2, "unknown device 'tpu'"),
        (["sample", "--val-split", "1.5"], 2, "val_split must be"),
        (["sample", "-o", "no/such/dir/m.safetensors"], 1, "directory no/such/dir does not exist"),
        (["no*match*.png"], 1, "no files match"),
        (["sample:class=42"], 1, "no images of class 42"),
    ],
)
def test_errors_are_one_line_with_the_right_exit_code(run, args, code, message):
    result = run("train", *args)
    assert result.exit_code == code
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_empty_and_imageless_directories_are_errors(run, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    assert "no images found" in run("train", tmp_path / "empty").stderr
    result = run("train", tmp_path / "notes")
    assert result.exit_code == 1 and "1 non-image files skipped" in result.stderr


def test_unreadable_images_are_fatal_or_skipped_and_counted_with_skip_bad(run, png_dir):
    (png_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (png_dir / ".hidden.png").write_bytes(b"ignored: hidden files are skipped")
    fatal = run("train", png_dir, *FAST, "-o", "m.safetensors")
    assert fatal.exit_code == 1 and "broken.png" in fatal.stderr
    result = run(
        "train", png_dir, "--epochs", "3", "--batch-size", "8", "--val-split", "0", "--skip-bad", "-o", "m.safetensors"
    )
    assert result.exit_code == 0
    assert result.stderr.count("skipped") == 2 and "broken.png" in result.stderr  # once, not every epoch
    assert modelfile.load("m.safetensors").training["skipped_images"] == 1


def test_output_that_is_not_a_model_file_is_never_overwritten(run, npy_file, tmp_path):
    precious = tmp_path / "photo.png"
    precious.write_bytes(b"not a model")
    result = run("train", npy_file, *FAST, "-o", precious)
    assert result.exit_code == 1 and "refusing to overwrite" in result.stderr
    assert precious.read_bytes() == b"not a model"


def test_info_shows_the_file_as_a_table_and_as_json(run, npy_file):
    args = ["train", npy_file, "--variant", "denoising", *FAST, "--keep-optimizer", "-o", "d.safetensors"]
    assert run(*args).exit_code == 0
    table = run("info", "d.safetensors")
    assert table.exit_code == 0
    assert "denoising" in table.stdout and "calibration mse" in table.stdout
    data = json.loads(run("info", "d.safetensors", "--json").stdout)
    assert data["model_config"]["variant"] == "denoising"
    assert data["model_config"]["arch"] == "unet"
    assert data["training"]["epochs"] == 1
    assert data["calibration"]["metrics"]["mse"]["n"] >= 1
    assert data["resumable"] is True


def test_a_diverging_run_stops_in_one_line_and_keeps_only_finite_epochs(run, npy_file, tmp_path):
    args = ["train", npy_file, "--variant", "vae", "--lr", "1e6", "--lr-schedule", "constant", "--epochs", "4"]
    result = run(*args, "-o", "m.safetensors")
    assert result.exit_code == 1, result.stderr
    assert result.stderr.startswith("Error: training diverged in epoch ") and result.stderr.count("\n") == 1
    assert "lower --lr" in result.stderr
    if (tmp_path / "m.safetensors").exists():  # the last finite epoch, loadable
        kept = modelfile.load(tmp_path / "m.safetensors")
        assert all(torch.isfinite(v).all() for v in kept.model.state_dict().values())


def test_resume_refuses_a_config_file_it_would_ignore(run, npy_file, tmp_path):
    assert run("train", npy_file, *FAST, "-o", "m.safetensors").exit_code == 0
    (tmp_path / "c.yaml").write_text("latent_dim: 8\n")
    result = run("train", npy_file, "--resume", "--config", "c.yaml", "--epochs", "2", "-o", "m.safetensors")
    assert result.exit_code == 2 and "--config c.yaml would be ignored" in result.stderr


def test_raising_epochs_on_resume_adds_a_cosine_cycle_and_keeps_the_first():
    from aecli.config import TrainConfig
    from aecli.train import learning_rate

    tc, spe = TrainConfig(lr=1.0), 10
    first = [learning_rate(tc, [2], e, s, spe) for e in range(2) for s in range(spe)]
    extended = [learning_rate(tc, [2, 3], e, s, spe) for e in range(3) for s in range(spe)]
    assert extended[:20] == first  # the epochs already planned keep their schedule
    assert extended[20] == 1.0 and extended[29] < 0.05  # a warm restart: peak, then decay to about 0
    assert all(a >= b for a, b in zip(extended[20:], extended[21:30]))


def test_resume_with_more_epochs_records_the_new_cycle(run, npy_file):
    args = ["train", npy_file, "--batch-size", "8", "-q", "-o", "m.safetensors"]
    assert run(*args, "--epochs", "1", "--keep-optimizer").exit_code == 0
    assert run(*args, "--epochs", "2", "--resume").exit_code == 0
    assert modelfile.load("m.safetensors").training["cycles"] == [1, 2]


def test_a_finished_file_is_slim_unless_asked_and_an_interrupted_one_can_resume(run, npy_file, tmp_path):
    args = ["train", npy_file, "--variant", "denoising", "--widths", "64,128", "--epochs", "1", "-q"]  # 0.9 M weights
    assert run(*args, "-o", "slim.safetensors").exit_code == 0
    assert run(*args, "--keep-optimizer", "-o", "full.safetensors").exit_code == 0
    slim = modelfile.load(tmp_path / "slim.safetensors", with_optimizer=True)
    weights = sum(v.numel() * v.element_size() for v in slim.model.state_dict().values())
    assert slim.optimizer is None and (tmp_path / "slim.safetensors").stat().st_size <= 1.1 * weights
    assert (tmp_path / "full.safetensors").stat().st_size > 2.5 * weights  # Adam's two moments too
    extend = run(*args[:-3], "--epochs", "2", "--resume", "-o", "slim.safetensors")
    assert extend.exit_code == 2 and "--keep-optimizer" in extend.stderr
    assert "--keep-optimizer" in run("train", "--help").stdout

"""`ae train --log-dir`: TensorBoard logs read back with TensorBoard's own reader, through the real CLI."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aecli.config import TrainConfig
from aecli.io import modelfile
from aecli.train import learning_rate
from tests.conftest import blobs

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TERMS = ("train/loss", "train/reconstruction", "train/kl", "train/lr", "train/images_per_second")


def events(folder: Path) -> EventAccumulator:
    """Every scalar and image in `folder`, as TensorBoard shows them (steps a restart purged dropped)."""
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def steps(log: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in log.Scalars(tag)]


def test_a_vae_logs_its_loss_terms_lr_speed_validation_grids_and_labelled_latents(run, tmp_path):
    # 400 labelled images of two classes: 360 train in 6 steps of 64, 40 held out
    args = ["train", "sample:class=1,2", "--variant", "vae", "--image-size", "12", "--batch-size", "64"]
    result = run(*args, "--epochs", "2", "--log-dir", "runs/vae", "-o", "vae.safetensors")
    assert result.exit_code == 0, result.stderr
    assert "TensorBoard logs: runs/vae" in result.stderr and result.stdout == ""
    log, training = events(tmp_path / "runs" / "vae"), modelfile.load("vae.safetensors").training
    assert sorted(log.Tags()["scalars"]) == sorted([*TERMS, "val/loss"])
    for tag in TERMS:
        assert steps(log, tag) == list(range(12)), tag
    assert steps(log, "val/loss") == [5, 11]  # each epoch's last step
    assert [e.value for e in log.Scalars("val/loss")] == pytest.approx(training["val_loss"], rel=1e-5)
    losses, sizes = [e.value for e in log.Scalars("train/loss")], [64] * 5 + [40]
    for epoch in range(2):  # the steps' losses, weighted by their batches, make the epoch's
        mean = np.average(losses[6 * epoch : 6 * epoch + 6], weights=sizes)
        assert mean == pytest.approx(training["train_loss"][epoch], rel=1e-5)
    kl = [e.value for e in log.Scalars("train/kl")]
    assert all(k >= 0 for k in kl) and any(k > 0 for k in kl)
    expected_lr = [learning_rate(TrainConfig(), [2], e, s, 6) for e in range(2) for s in range(6)]
    assert [e.value for e in log.Scalars("train/lr")] == pytest.approx(expected_lr, rel=1e-6)
    assert all(e.value > 0 for e in log.Scalars("train/images_per_second"))

    grids = log.Images("val/reconstructions")
    assert [g.step for g in grids] == [5, 11]
    picture = Image.open(io.BytesIO(grids[-1].encoded_image_string))
    assert picture.size == (8 * 14 + 2, 2 * 14 + 2)  # 8 held-out images of 12x12 above their reconstructions

    folder = tmp_path / "runs" / "vae"
    config = (folder / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "latents:00011"' in config and "sprite" in config
    embedded = folder / "00011" / "latents"
    vectors = np.loadtxt(embedded / "tensors.tsv", delimiter="\t")
    assert vectors.shape == (40, 32)  # every held-out image, its latent_dim numbers
    header, *rows = (embedded / "metadata.tsv").read_text().splitlines()
    assert header == "label\tname" and len(rows) == 40
    assert {row.split("\t")[0] for row in rows} == {"1: Trouser", "2: Pullover"}
    assert Image.open(embedded / "sprite.png").size == (7 * 12, 7 * 12)  # 40 thumbnails, 7 to a side


def test_resume_continues_the_curves_in_the_same_folder_without_a_step_twice(run, tmp_path):
    np.save(tmp_path / "blobs.npy", blobs(40))  # 36 train images: 5 steps of 8 per epoch
    args = ["train", "blobs.npy", "--batch-size", "8", "-q", "--log-dir", "runs/r", "-o", "m.safetensors"]
    assert run(*args, "--epochs", "1", "--keep-optimizer").exit_code == 0
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "runs" / "r")) as late:  # a run killed after its last save had logged more
        for step in (5, 6, 7):
            late.add_scalar("train/loss", 999.0, step)
    assert run(*args, "--epochs", "2", "--resume").exit_code == 0

    log = events(tmp_path / "runs" / "r")
    assert steps(log, "train/loss") == list(range(10))
    assert 999.0 not in [e.value for e in log.Scalars("train/loss")]
    assert steps(log, "train/lr") == list(range(10))
    assert steps(log, "val/loss") == [4, 9]
    assert [g.step for g in log.Images("val/reconstructions")] == [4, 9]
    assert "train/kl" not in log.Tags()["scalars"]  # the plain autoencoder has one term
    folder = tmp_path / "runs" / "r"
    assert 'tensor_name: "latents:00009"' in (folder / "projector_config.pbtxt").read_text()
    names = (folder / "00009" / "latents" / "metadata.tsv").read_text().splitlines()
    assert len(names) == 4 and all(name.startswith("blobs.npy#") for name in names)  # no classes: the names alone


def test_logging_changes_nothing_that_is_learnt(run, tmp_path):
    np.save(tmp_path / "blobs.npy", blobs(40))
    args = ["train", "blobs.npy", "--variant", "denoising", "--epochs", "2", "--batch-size", "8", "-q"]
    assert run(*args, "--log-dir", "runs/d", "-o", "logged.safetensors").exit_code == 0
    assert run(*args, "-o", "plain.safetensors").exit_code == 0
    logged, plain = (modelfile.load(name).model.state_dict() for name in ("logged.safetensors", "plain.safetensors"))
    assert all(torch.equal(logged[k], plain[k]) for k in plain)
    grid = events(tmp_path / "runs" / "d").Images("val/reconstructions")[0]
    assert (grid.width, grid.height) == (4 * 18 + 2, 3 * 18 + 2)  # a denoiser's grid: inputs, noisy, outputs


def test_without_the_extra_it_fails_in_one_line_before_any_work(run, tmp_path, monkeypatch, npy_file):
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it fails
    result = run("train", npy_file, "--epochs", "1", "--log-dir", "runs/x", "-o", "m.safetensors")
    assert result.exit_code == 1
    assert result.stderr == "Error: --log-dir needs TensorBoard: pip install 'aecli[tensorboard]'\n"
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "runs").exists()
    printed = run("train", "--log-dir", "runs/x", "--print-config")  # a CLI option, not a stored setting
    assert printed.exit_code == 0 and "log" not in printed.stdout

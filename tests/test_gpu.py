"""The CUDA path (bf16 autocast, pinned batches): trained on the GPU, loaded anywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import blobs, write_pngs

from aecli.config import load_settings
from aecli.data import open_inputs
from aecli.io import modelfile
from aecli.models import list_variants
from aecli.train import fit
from aecli.train.run import Callbacks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.mark.parametrize("variant", list_variants())
def test_every_variant_trains_on_cuda_and_loads_on_cpu(run, npy_file, variant):
    result = run("train", npy_file, "--variant", variant, "--device", "cuda", "--epochs", "2", "-q", "-o", "g.safetensors")
    assert result.exit_code == 0, result.stderr
    loaded = modelfile.load("g.safetensors")
    assert loaded.training["device"].startswith("cuda")
    assert all(len(loaded.training[k]) == 2 for k in ("train_loss", "val_loss"))
    assert all(v == v for v in loaded.training["train_loss"])  # bf16 never gave NaN
    x = torch.rand(2, 1, 16, 16)
    assert torch.isfinite(loaded.model(x)).all()


def test_auto_picks_cuda_and_resume_continues_there(run, npy_file):
    assert run("train", npy_file, "--epochs", "1", "--keep-optimizer", "-q", "-o", "a.safetensors").exit_code == 0
    assert modelfile.load("a.safetensors").training["device"].startswith("cuda")
    assert run("train", npy_file, "--epochs", "2", "--resume", "-q", "-o", "a.safetensors").exit_code == 0
    assert modelfile.load("a.safetensors").training["epochs"] == 2


def test_image_files_stream_through_pinned_memory(run, png_dir):
    result = run("train", png_dir, "--device", "cuda", "--workers", "2", "--epochs", "1", "-q", "-o", "p.safetensors")
    assert result.exit_code == 0, result.stderr


class _Held(Callbacks):
    """Looks at the run after each epoch: where its images are held."""

    def __init__(self):
        self.held = []

    def saved(self, epoch, run):
        r = run.resident
        self.held.append(None if r is None else (r.complete, r.pixels.device.type, r.pixels.dtype))


def test_fashion_sized_arrays_are_held_on_the_gpu_as_uint8_after_the_first_epoch(tmp_path):
    np.save(tmp_path / "x.npy", blobs(300))
    held = _Held()
    settings = load_settings(None, {"epochs": 2, "batch_size": 32, "device": "cuda"})  # preload auto
    fit(open_inputs([str(tmp_path / "x.npy")]), settings, tmp_path / "m.safetensors", callbacks=held)
    assert held.held == [(True, "cuda", torch.uint8)] * 2


def test_held_and_streamed_training_reach_the_same_loss_on_the_gpu(run, npy_file):
    losses = {}
    for preload in ("yes", "no"):
        args = ["train", npy_file, "--device", "cuda", "--epochs", "3", "--preload", preload, "-q"]
        assert run(*args, "-o", f"{preload}.safetensors").exit_code == 0
        losses[preload] = modelfile.load(f"{preload}.safetensors").training["val_loss"][-1]
    assert losses["yes"] == pytest.approx(losses["no"], rel=0.05)  # bf16 and cuDNN: close, not bit-equal


def test_a_conditional_model_looks_classes_up_on_the_gpu(run, tmp_path):
    for k, name in enumerate(["discs", "dim"]):
        write_pngs(tmp_path / "two" / name, (blobs(16, seed=k) * (1 - 0.5 * k)).astype(np.uint8))
    args = ["--variant", "vae", "--condition", "folders", "--device", "cuda", "--preload", "yes", "--channels-last", "no"]
    assert run("train", "two", *args, "--epochs", "2", "-q", "-o", "c.safetensors").exit_code == 0
    assert run("sample", "-m", "c.safetensors", "--class", "dim", "-n", "2", "-o", "s.png").exit_code == 0

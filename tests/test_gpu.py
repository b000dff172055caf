"""The CUDA path (bf16 autocast, pinned batches): trained on the GPU, loaded anywhere."""

from __future__ import annotations

import pytest
import torch

from aecli.io import modelfile
from aecli.models import list_variants

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

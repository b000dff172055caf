"""`ae train --compile`: the compiled step trains as the plain one does, or training goes on without it.

The real torch.compile needs a C++ compiler on the CPU and takes seconds per model, so only the
cases it once got wrong run it; the fallback is tested with a compile that fails at once.
"""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
from conftest import blobs
from safetensors.torch import load_file

from aecli.models.codebook import Codebook

needs_compiler = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="torch.compile needs a C++ compiler on the CPU"
)


@needs_compiler
def test_a_denoiser_compiles_with_a_short_last_batch(run, tmp_path):
    """Its noise is drawn in the batch's shape, which a symbolic size (the short batch's) broke."""
    np.save(tmp_path / "x.npy", blobs(30))  # 27 training images: batches of 8, 8, 8 and 3
    result = run("train", "x.npy", "--variant", "denoising", "--epochs", "1", "--batch-size", "8", "--compile",
                 "-o", "m.safetensors")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "torch.compile failed" not in result.stderr


@needs_compiler
def test_the_codebook_follows_its_outputs_alike_compiled():
    """torch 2.14's inductor dropped the alpha of an in-place add after a matrix product."""
    torch.manual_seed(0)
    plain = Codebook(16, 4, 0.03)
    plain.follow(torch.randn(8, 4, 3, 3), torch.randint(16, (8, 3, 3)))  # the first batch places the codes
    compiled = copy.deepcopy(plain)
    follow = torch.compile(lambda book, z, codes: book.follow(z, codes), dynamic=False)
    for step in range(3):
        z, codes = torch.randn(8, 4, 3, 3), torch.randint(16, (8, 3, 3))
        torch.manual_seed(step)
        plain.follow(z, codes)
        torch.manual_seed(step)
        follow(compiled, z, codes)
    assert torch.allclose(compiled.sums, plain.sums, atol=1e-5) and torch.allclose(compiled.counts, plain.counts)


def test_a_model_compile_fails_on_trains_without_it_and_says_so(run, tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", blobs(40))
    plain = run("train", "x.npy", "--variant", "vqvae", "--epochs", "2", "--batch-size", "8", "-o", "plain.safetensors")
    assert plain.exit_code == 0, plain.stderr

    def failing(step_loss, **options):
        def compiled(batch):
            step_loss(batch)  # as a compiled step would: a codebook placed, statistics moved, before the failure
            raise RuntimeError("no C++ compiler found\nmore of torch's report")

        return compiled

    monkeypatch.setattr(torch, "compile", failing)
    result = run("train", "x.npy", "--variant", "vqvae", "--epochs", "2", "--batch-size", "8", "--compile",
                 "-o", "fallback.safetensors")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "torch.compile failed" in line]
    assert notes == ["--compile: torch.compile failed on this model (RuntimeError: no C++ compiler found); "
                     "training without it"]  # fmt: skip
    a, b = load_file(tmp_path / "plain.safetensors"), load_file(tmp_path / "fallback.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the trial left no trace

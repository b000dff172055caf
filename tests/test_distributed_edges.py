"""Edges of `ae` under torchrun: blank stand-ins and BatchNorm, BatchNorm's statistics per process,
and `encode --sample` drawing an image's noise whatever the batching, the skipping or the process count.

The torchrun tests start two gloo processes on CPU with the helpers of tests/test_distributed.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aecli import runtime
from aecli.config import ModelConfig, Settings, TrainConfig
from aecli.data import open_inputs
from aecli.io import modelfile
from aecli.models import create_model
from aecli.train.run import Callbacks, Run, Split
from tests.conftest import blobs, write_pngs
from tests.test_distributed import ROOT, free_port, one_thread, torchrun  # noqa: F401 (one_thread: a fixture)


def buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every buffer: each BatchNorm's running mean and variance and its count of batches."""
    return {name: buffer.clone() for name, buffer in model.named_buffers()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_stand_in_step_leaves_batchnorm_statistics_alone(tmp_path):
    np.save(tmp_path / "blobs.npy", blobs(8))
    settings = Settings(ModelConfig(variant="denoising"), TrainConfig(device="cpu", batch_size=2))
    run = Run.start(open_inputs([str(tmp_path / "blobs.npy")]), settings, tmp_path / "m.safetensors", None, Callbacks())
    run.model.train()
    before = buffers(run.model)
    assert any(name.endswith("running_var") for name in before)  # a unet: BatchNorm in every block

    with run.frozen_statistics(blank=True):
        run.step_loss({"images": run.stand_in(), "index": torch.arange(2)})["loss"].backward()
    assert same(buffers(run.model), before)
    assert all(m.training for m in run.model.modules())  # back in training mode for the next step

    with run.frozen_statistics(blank=False):  # a real batch: the statistics learn from it
        run.step_loss({"images": run.stand_in(), "index": torch.arange(2)})
    assert not same(buffers(run.model), before)


def test_stand_in_steps_on_rank_0_leave_the_saved_statistics_as_they_started(tmp_path):
    """Every image of rank 0's share fails to load, so it steps on blanks all epoch. Its running
    statistics are the ones saved (docs/distributed.md): rank 1's images never reach them either."""
    n, val_split, seed = 16, 0.25, 0  # 12 training images: 6 per process, none repeated by padding
    paths = write_pngs(tmp_path / "pngs", blobs(n, seed=5))
    train = Split.make(n, val_split, seed).train
    order = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(runtime.step_seed(seed, 0, 0)))]
    for i in order[0::2]:  # rank 0 takes items 0, 2, 4, ... of the epoch's order (distributed.shard_epoch)
        paths[i].write_bytes(b"not a png")

    done = torchrun(
        "train", "pngs", "--variant", "denoising", "--epochs", "1", "--batch-size", "2", "--val-split", val_split,
        "--seed", seed, "--skip-bad", "-o", "dae.safetensors", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = modelfile.load(tmp_path / "dae.safetensors")
    assert loaded.training["images_seen"] == 6 and loaded.training["skipped_images"] == 6  # rank 0 saw none
    assert same(buffers(loaded.model), buffers(create_model(loaded.config))), "blanks moved the running statistics"


BATCHNORM_PER_PROCESS = """
import copy
import os
import torch
from aecli import distributed
from aecli.config import ModelConfig
from aecli.models import create_model

device = torch.device("cpu")
distributed.init(device)
model = create_model(ModelConfig(variant="ae", arch="unet").resolved(1, 16))
step_loss = distributed.training_loss(model, device)  # DDP gives every process rank 0's weights
own, whole = copy.deepcopy(model), copy.deepcopy(model)
images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))  # one global batch
mine = images[distributed.rank() :: 2]  # this process's share of it
step_loss({"images": mine})["loss"].backward()
own.loss({"images": mine})
whole.loss({"images": images})

def stats(m):
    return torch.cat([b.float().flatten() for b in m.buffers()])

shares = distributed.gather(stats(model))
distributed.broadcast_buffers(model)  # what validation and saving do first
saved = distributed.gather(stats(model))
line = " ".join([
    f"rank {distributed.rank()}: own share {torch.equal(stats(own), shares[distributed.rank()])}",
    f"whole batch {torch.equal(stats(whole), shares[distributed.rank()])}",
    f"ranks differ {not torch.equal(*shares)}, then all rank 0's {all(torch.equal(s, shares[0]) for s in saved)}",
])
os.write(1, (line + "\\n").encode())  # one write: the two processes share stdout and must not interleave
distributed.barrier()  # leave together, as commands do: gloo aborts one whose peer tears the group down under it
os._exit(0)  # and at once: the interpreter teardown after the barrier still let gloo abort one (a CI run, 2026-11-26)
"""


def test_batchnorm_statistics_are_per_process_and_rank_0s_are_kept(tmp_path):
    """docs/distributed.md: BatchNorm normalises over each process's share (no SyncBatchNorm: DDP
    refuses it on CPU), each process's running statistics learn from its share alone, and rank 0's
    go to every process before validation and saving."""
    (tmp_path / "per_process.py").write_text(BATCHNORM_PER_PROCESS)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", AE_DIST_TIMEOUT="60", PYTHONPATH=str(ROOT))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()), "per_process.py",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(done.stdout.splitlines()) == [
        f"rank {r}: own share True whole batch False ranks differ True, then all rank 0's True" for r in (0, 1)
    ]


@pytest.fixture
def pngs(tmp_path) -> Path:
    write_pngs(tmp_path / "pngs", blobs(32, seed=3))
    return tmp_path / "pngs"


def test_encode_sample_rows_do_not_depend_on_the_batch_size(run, models, pngs):
    common = ["encode", pngs, "-m", models["vae"], "--sample", "--seed", "3", "-q"]
    for size in (8, 5, 1):
        assert run(*common, "--batch-size", size, "-o", f"z{size}.npy").exit_code == 0
    rows = np.load("z8.npy")  # the same draws; the encoder's last bits may move with the batch size
    np.testing.assert_allclose(np.load("z5.npy"), rows, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.load("z1.npy"), rows, rtol=1e-5, atol=1e-6)
    assert run("encode", pngs, "-m", models["vae"], "-o", "mean.npy", "-q").exit_code == 0
    assert not np.allclose(np.load("mean.npy"), rows)  # draws, not the posterior mean


def test_encode_sample_rows_do_not_depend_on_images_skipped_before_them(run, models, pngs):
    common = ["encode", pngs, "-m", models["vae"], "--sample", "--batch-size", "8", "--skip-bad", "-q"]
    assert run(*common, "-o", "all.npy").exit_code == 0
    (pngs / "img001.png").write_bytes(b"not a png")
    assert run(*common, "-o", "some.npy").exit_code == 0
    expected = np.delete(np.load("all.npy"), 1, axis=0)  # every other image keeps its own draw
    np.testing.assert_allclose(np.load("some.npy"), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_distributed_encode_sample_with_a_skipped_image_matches_one_process(run, models, pngs, tmp_path):
    (pngs / "img003.png").write_bytes(b"not a png")  # in rank 0's block: batches 0-1 of 4
    common = ["encode", pngs, "-m", models["vae"], "--sample", "--batch-size", "8", "--skip-bad"]
    assert run(*common, "-o", "one.npy", "-q").exit_code == 0
    done = torchrun(*common, "-o", "two.npy", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "two.npy").read_bytes() == (tmp_path / "one.npy").read_bytes()

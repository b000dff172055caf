"""`ae` under torchrun: two gloo processes on CPU, their outputs compared with one process's.

Each torchrun test costs a few seconds of process start-up (torchrun, then two interpreters
importing torch on a small machine); the sharding arithmetic is tested in-process below them.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aecli import distributed
from aecli.io import modelfile
from aecli.errors import UsageError
from tests.conftest import blobs, write_pngs

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node N -m aecli ARGS` on 127.0.0.1, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", AE_DIST_TIMEOUT="60", PYTHONPATH=str(ROOT), AE_DEVICE="cpu")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "aecli", *map(str, args),
    ]  # fmt: skip
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture
def one_thread():
    """The single-process baseline with one thread, as each torchrun process has."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def pngs(tmp_path) -> Path:
    write_pngs(tmp_path / "pngs", blobs(64, seed=3))
    return tmp_path / "pngs"


def test_distributed_train_writes_a_loadable_model_and_resumes(tmp_path):
    np.save(tmp_path / "blobs.npy", blobs(64))
    args = ["train", "blobs.npy", "--variant", "vae", "--batch-size", "8", "-o", "vae.safetensors"]
    done = torchrun(*args, "--epochs", "1", "--keep-optimizer", "--preview", "p.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("model: vae.safetensors") == 1  # rank 0 alone talks
    assert not re.search(r"\w+Warning:", done.stderr)  # no Python warnings (a deprecated DDP argument, say)
    assert (tmp_path / "p.png").is_file()

    done = torchrun(*args, "--epochs", "2", "--resume", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    loaded = modelfile.load(tmp_path / "vae.safetensors")
    training = loaded.training
    assert loaded.config.variant == "vae" and training["complete"] and training["epochs"] == 2
    assert training["images_seen"] == 2 * training["data"]["train"]  # 58 train images: an even share each
    assert "2 processes" in training["device"]
    assert loaded.calibration["split"] == "validation"
    assert loaded.calibration["metrics"]["mse"]["n"] == training["data"]["validation"]  # gathered from both
    assert loaded.latent_stats["n"] == training["data"]["train"]


def test_distributed_encode_is_byte_identical_to_one_process(run, models, pngs, tmp_path, one_thread):
    common = ["encode", pngs, "-m", models["vae"], "--batch-size", "8"]
    assert run(*common, "-o", "one.npy", "--index", "one.txt", "-q").exit_code == 0
    done = torchrun(*common, "-o", "two.npy", "--index", "two.txt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("encoded 64 images") == 1
    assert (tmp_path / "two.npy").read_bytes() == (tmp_path / "one.npy").read_bytes()
    assert (tmp_path / "two.txt").read_text() == (tmp_path / "one.txt").read_text()


def test_distributed_score_is_byte_identical_to_one_process(run, models, pngs, tmp_path, one_thread):
    common = ["score", pngs, "-m", models["ae"], "--batch-size", "8", "--threshold", "p75", "--format", "csv"]
    single = run(*common, "--report", "one")
    assert single.exit_code == 0, single.stderr
    done = torchrun(*common, "--report", "two", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == single.stdout  # rank 0 alone writes; the percentile is over all 64 scores
    assert "p75: the 75th percentile of 64 scored images" in done.stderr
    one, two = (sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*")) for d in ("one", "two"))
    maps = [p for p in one if p.parts[0] == "maps"]
    assert one == two and len(maps) == 1 + 16  # the folder and 16 maps: two batches of 8, one per process
    for name in one:  # each process drew the maps of its own batches; rank 0 the page, CSV and plot
        if (tmp_path / "one" / name).is_file():
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_distributed_denoise_writes_the_same_files_and_report(run, models, pngs, tmp_path, one_thread):
    common = ["denoise", pngs, "-m", models["dae"], "--batch-size", "8", "--add-noise", "0.2", "--reference", pngs]
    assert run(*common, "-o", "one", "--report", "one.csv", "-q").exit_code == 0
    done = torchrun(*common, "-o", "two", "--report", "two.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()  # gathered to rank 0
    assert done.stdout.count("denoised") == 1
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(names) == 64
    assert all((tmp_path / "one" / n).read_bytes() == (tmp_path / "two" / n).read_bytes() for n in names)


def test_a_failing_process_stops_the_others(models, pngs, tmp_path):
    (pngs / "img063.png").write_bytes(b"not a png")  # in the second process's block of batches
    done = torchrun("encode", pngs, "-m", models["ae"], "--batch-size", "8", "-o", "z.npy", cwd=tmp_path)
    assert done.returncode != 0
    assert "img063.png: not an image" in done.stderr
    assert not (tmp_path / "z.npy").exists()


def as_rank(monkeypatch, rank: int, size: int) -> None:
    monkeypatch.setenv("WORLD_SIZE", str(size))
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))


ONE_RANK_ONLY = """
import sys
from aecli import distributed, infer
from aecli.data import open_inputs
from aecli.scoring.scores import score

model = infer.load_model(sys.argv[1], "cpu")  # joins the process group: every rank
if distributed.rank() == 0:  # library calls on one rank alone return its shard, waiting for no one
    images = open_inputs([sys.argv[2]])
    shard = {"batch_size": 8}  # 8 batches of the 64 images: rank 0 takes the first 4
    print(len(infer.encode(model, images, **shard).vectors), len(score(model, images, **shard).index), flush=True)
"""


def test_a_library_call_on_one_rank_never_waits_for_the_others(models, pngs, tmp_path):
    (tmp_path / "one_rank.py").write_text(ONE_RANK_ONLY)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", AE_DIST_TIMEOUT="20", PYTHONPATH=str(ROOT))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()), "one_rank.py", str(models["ae"]), str(pngs),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["32", "32"]  # rank 0's block of the 64 images: half


def test_epoch_shards_are_equal_cover_every_image_and_match_one_process_steps(monkeypatch):
    order = np.random.default_rng(0).permutation(23)
    shards = []
    for rank in range(4):
        as_rank(monkeypatch, rank, 4)
        shards.append(distributed.shard_epoch(order))
    assert {len(s) for s in shards} == {6}  # 23 padded to 24
    assert set(np.concatenate(shards)) == set(order)
    # step k of all processes together is step k of one process with the same global batch
    per_process = 2
    for k in range(3):
        together = sorted(np.concatenate([s[k * per_process : (k + 1) * per_process] for s in shards]))
        assert together == sorted(np.resize(order, 24)[k * 8 : (k + 1) * 8])


def test_batch_blocks_are_contiguous_and_in_rank_order(monkeypatch):
    batches = [np.arange(i * 4, i * 4 + 4) for i in range(5)]
    blocks = []
    for rank in range(3):
        as_rank(monkeypatch, rank, 3)
        blocks.append(distributed.shard_batches(batches))
        assert distributed.first_batch(len(batches)) == sum(len(b) for b in blocks[:-1])
    assert [len(b) for b in blocks] == [1, 2, 2]
    assert np.array_equal(np.concatenate([x for block in blocks for x in block]), np.arange(20))


def test_global_batch_must_divide_among_processes(monkeypatch):
    as_rank(monkeypatch, 0, 4)
    assert distributed.per_process_batch(32) == 8
    with pytest.raises(UsageError, match="try 8 or 12"):
        distributed.per_process_batch(10)


def test_one_process_is_untouched(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    order = np.arange(7)
    assert distributed.shard_epoch(order) is order
    assert distributed.per_process_batch(7) == 7
    assert distributed.process_seed(123) == 123
    assert distributed.gather("x") == ["x"] and distributed.total(3) == 3
    assert not distributed.active() and distributed.leader()

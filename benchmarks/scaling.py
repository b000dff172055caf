"""Images/s of `ae train` and `ae encode` with one process and with two under torchrun, on this machine.

Fair on a small machine: the baseline is one process with as many threads as there are cores
(OMP_NUM_THREADS=cores, 2 here), the other side `torchrun --nproc-per-node 2` with cores/2 threads
each (gloo on CPU), so both sides use every core and only the split of the work differs.
Start-up (interpreters, the torch import, torchrun's rendezvous and shutdown: about 5-8 s here)
is not what scales, so a small driver imports aecli, joins the process group, waits for every
process, then times the `ae` command itself (run in-process through the CLI) to the last process's end.

    python benchmarks/scaling.py [--rounds 3] [--workdir DIR]

train: the bundled `sample` (1,800 training images, 28x28), 2 epochs, global batch 128; its time
includes both validation passes and the final latent fit. encode: `sample` listed 8 times (16,000
images), batch 256. Prints the medians of interleaved rounds, the ratio 2 processes / 1 process,
and whether the latents are byte-identical. A third side, one process with one thread, shows how
much of a difference is the threads' (OpenMP threads stall each other on a loaded machine).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

from _common import ROOT, workdir

TRAIN_EPOCHS, TRAIN_IMAGES = 2, 1800  # `sample` minus its 10 % validation split, per epoch
ENCODE_COPIES, SAMPLE_IMAGES = 8, 2000  # `sample` listed 8 times

# Run by every process: the imports and the rendezvous are done before the clock starts.
DRIVER = """
import sys, time
import torch
from aecli import distributed, infer, train  # noqa: F401  (imported before timing)
from aecli.cli import app

distributed.init(torch.device("cpu"))
distributed.barrier()
started = time.perf_counter()
app(sys.argv[1:], prog_name="ae", standalone_mode=False)
distributed.barrier()
if distributed.leader():
    print(f"{time.perf_counter() - started:.4f}")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, driver: Path, *args: str | Path) -> list[str]:
    """The driver as one plain process, or under torchrun with `processes` of them."""
    if processes == 1:
        return [sys.executable, str(driver), *map(str, args)]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(driver), *map(str, args),
    ]  # fmt: skip


def timed(command: list[str], threads: int, cwd: Path) -> float:
    """Seconds the command took inside its processes, as rank 0's driver printed them."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT), "AE_DEVICE": "cpu"}
    done = subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="where the models and latents go (default: a temporary directory)")
    args = parser.parse_args()
    with workdir(args.workdir, "scaling-") as work:
        measure(work, args.rounds)


def measure(work: Path, rounds: int) -> None:
    cores = os.cpu_count() or 2
    # (processes, threads each): the baseline, the fair split, and one thread alone for reference
    sides = [(1, cores), (2, max(1, cores // 2)), (1, 1)]
    driver = work / "driver.py"
    driver.write_text(DRIVER)
    model = work / "model.safetensors"
    if not model.is_file():
        timed(launch(1, driver, "train", "sample", "--epochs", "1", "-o", model, "-q"), cores, work)
    runs, models = {}, {}
    for side in sides:
        processes, threads = side
        models[side] = work / f"train-{processes}p{threads}t.safetensors"
        runs[("train", side)] = launch(
            processes, driver, "train", "sample", "--epochs", TRAIN_EPOCHS, "--batch-size", "128",
            "--workers", "0", "-o", models[side], "-q",
        )  # fmt: skip
        runs[("encode", side)] = launch(
            processes, driver, "encode", *["sample"] * ENCODE_COPIES, "-m", model, "--batch-size", "256",
            "--workers", "0", "-o", work / f"z-{processes}p{threads}t.npy", "-q",
        )  # fmt: skip
    images = {"train": TRAIN_EPOCHS * TRAIN_IMAGES, "encode": ENCODE_COPIES * SAMPLE_IMAGES}
    times: dict[tuple[str, tuple[int, int]], list[float]] = {key: [] for key in runs}
    load_before = os.getloadavg()
    for _ in range(rounds):  # interleaved, so drift on a shared machine hits every side
        for key, command in runs.items():
            if key[0] == "train":  # `ae train` will not replace a model file: start afresh
                models[key[1]].unlink(missing_ok=True)
            times[key].append(timed(command, key[1][1], work))
    load_after = os.getloadavg()
    median = {key: statistics.median(values) for key, values in times.items()}

    (_, base_threads), (_, split_threads), _ = sides
    print(
        f"{cores} cores; 1 process x {base_threads} threads vs 2 torchrun processes (gloo) x {split_threads} thread(s)"
    )
    print(f"load average (1 min) before/after timing: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print(f"median of {rounds} interleaved rounds, timed inside the processes (start-up excluded):")
    for kind, what in (("train", f"{TRAIN_EPOCHS} epochs of {TRAIN_IMAGES}"), ("encode", f"{images['encode']:,}")):
        for side in sides:
            rate, base = images[kind] / median[(kind, side)], images[kind] / median[(kind, sides[0])]
            runs_s = ", ".join(f"{t:.2f}" for t in times[(kind, side)])
            print(
                f"  {kind:6} {side[0]} proc x {side[1]} thread{'s' if side[1] > 1 else ' '}: "
                f"{median[(kind, side)]:6.2f} s [{runs_s}] for {what} images  {rate:7,.0f} img/s  ratio {rate / base:.2f}"
            )
    z = [(work / f"z-{p}p{t}t.npy").read_bytes() for p, t in sides]
    print(
        f"encode latents byte-identical: 2 processes vs 1 process x {base_threads} threads {z[1] == z[0]}, "
        f"vs 1 process x 1 thread {z[1] == z[2]}"
    )


if __name__ == "__main__":
    main()

"""What `ae encode` costs beyond the encoding itself, on a directory of 10,000 28x28 PNGs; and its memory.

The baseline is a bare loop run as its own process, so Python and torch start-up count on both
sides: list the files sorted, decode each with torchvision, stack batches of 256, run the model's
`encode` under no_grad and save the latents with numpy. `ae encode` adds the CLI, its input
resolution, a DataLoader (with --workers 2, two decoding processes) and its output writer.

    python benchmarks/stream_encode.py [--rounds 3] [--quick] [--workdir DIR] [--keep]

Prints the medians of interleaved rounds (wall time, and CPU time, which other load on a shared
machine moves less) and the ratios ae/bare (target: <= 1.15) and workers 2/workers 0
(target: < 1), checks ae's latents equal the bare loop's, then reports the
peak RSS of `ae encode` on 10,000 and 100,000 PNGs (target: flat, under 1.5 GB); --quick
skips the 100,000.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import fashion_mnist
from torchvision.io import encode_png

from aecli.data.named import fashion_mnist_dirs

# The baseline, written to the work directory and run with this interpreter.
BARE_LOOP = """
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.simplefilter("ignore", DeprecationWarning)  # torchvision's notice about TorchCodec
from torchvision.io import decode_image

from aecli.io.modelfile import load

source, model_path, out = sys.argv[1:]
model = load(Path(model_path)).model
paths = sorted(Path(source).iterdir())
rows = []
with torch.no_grad():
    for start in range(0, len(paths), 256):
        pixels = [
            decode_image(torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8)).float() / 255
            for p in paths[start : start + 256]
        ]
        rows.append(model.encode(torch.stack(pixels)).numpy())
np.save(out, np.concatenate(rows))
"""

# Runs one command and prints the largest peak RSS (KiB) among the processes it waited for.
PEAK_RSS = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); " \
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"  # fmt: skip


def test_images() -> torch.Tensor:
    """(10000, 1, 28, 28) uint8: Fashion-MNIST's test set where a local copy exists, else seeded noise blobs."""
    if any((d / "t10k-images-idx3-ubyte.gz").is_file() for d in fashion_mnist_dirs()):
        x, _ = fashion_mnist("test")
        return x.mul(255).round().to(torch.uint8)
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(10_000, 1, 7, 7, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=28, mode="bilinear").mul(255).to(torch.uint8)


def write_pngs(images: torch.Tensor, directory: Path, shift: int = 0) -> None:
    """One PNG per image, zero-padded names so sorted order is the array's order; shift rolls pixels
    sideways so each copy in the 100k set differs from the others."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        pixels = image.roll(shift, dims=-1) if shift else image
        (directory / f"{i:05d}.png").write_bytes(encode_png(pixels).numpy().tobytes())


def run(*command: str | Path, cwd: Path) -> tuple[float, float]:
    """Wall time of a new process, as a user would start it, and the CPU seconds it and its workers
    used: on a shared machine the CPU time moves less with other people's load than the wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([str(c) for c in command], cwd=cwd, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def ae(*args: str | Path) -> list[str | Path]:
    return [sys.executable, "-m", "aecli", *args]


def peak_rss_mib(command: list[str | Path], cwd: Path) -> float:
    """Peak RSS of a command's largest process, measured by a fresh wrapper so no earlier run counts."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *map(str, command)], cwd=cwd, check=True, capture_output=True, text=True
    )
    return int(done.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the 100,000-image memory run")
    parser.add_argument("--workdir", type=Path, help="where the PNGs and model go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the 100,000 PNGs (and a temporary workdir)")
    args = parser.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="stream-encode-"))).resolve()
    try:
        measure(work, args)
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def measure(work: Path, args: argparse.Namespace) -> None:
    images, small, big = test_images(), work / "png10k", work / "png100k"
    if not (small.is_dir() and len(os.listdir(small)) == len(images)):
        write_pngs(images, small)
    model = work / "model.safetensors"
    if not model.is_file():
        run(*ae("train", "sample", "--epochs", "1", "-o", model, "-q"), cwd=work)
    (work / "bare_encode.py").write_text(BARE_LOOP)
    sides = {
        "bare": [sys.executable, work / "bare_encode.py", small, model, work / "z_bare.npy"],
        "w0": ae("encode", small, "-m", model, "-o", work / "z_w0.npy", "-q", "--workers", "0"),
        "w2": ae("encode", small, "-m", model, "-o", work / "z_w2.npy", "-q", "--workers", "2"),
    }
    run(*sides["bare"], cwd=work)  # warm the page cache and the import caches before timing
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.rounds):  # interleave, so drift on a busy machine hits every side
        for name, command in sides.items():
            wall, used = run(*command, cwd=work)
            times[name].append(wall)
            cpu[name].append(used)
    load_after = os.getloadavg()
    bare, w0, w2 = (statistics.median(times[k]) for k in ("bare", "w0", "w2"))
    cpu_bare, cpu_w0, cpu_w2 = (statistics.median(cpu[k]) for k in ("bare", "w0", "w2"))

    reference = np.load(work / "z_bare.npy")
    same = {k: np.allclose(np.load(work / f"z_{k}.npy"), reference, atol=1e-5) for k in ("w0", "w2")}

    print(f"{len(images)} PNGs, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads per process")
    print(f"load average (1 min) before/after timing: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print(f"median of {args.rounds} rounds, each side a new process:")
    print(f"  bare loop             : {bare:6.2f} s {fmt_all(times['bare'])}   CPU {cpu_bare:6.2f} s")
    print(
        f"  ae encode --workers 0 : {w0:6.2f} s {fmt_all(times['w0'])}   CPU {cpu_w0:6.2f} s"
        f"   ae/bare {w0 / bare:.3f} (target <= 1.15), CPU {cpu_w0 / cpu_bare:.3f}"
    )
    print(
        f"  ae encode --workers 2 : {w2:6.2f} s {fmt_all(times['w2'])}   CPU {cpu_w2:6.2f} s"
        f"   ae/bare {w2 / bare:.3f}, CPU {cpu_w2 / cpu_bare:.3f}"
    )
    print(f"  workers 2 / workers 0 : {w2 / w0:.3f} (target < 1)")
    print(
        f"latents equal the bare loop's (allclose, {reference.shape}): workers 0 {same['w0']}, workers 2 {same['w2']}"
    )

    rss = {"10k": small}
    if not args.quick:
        if not (big.is_dir() and sum(len(f) for _, _, f in os.walk(big)) == 10 * len(images)):
            for copy in range(10):
                write_pngs(images, big / f"copy{copy}", shift=copy)
        rss["100k"] = big
    print("peak RSS (largest process; with --workers 2 the main process or a worker):")
    bare_peak = peak_rss_mib(sides["bare"], work)  # what torch and torchvision alone come to
    print(f"   10k PNGs, bare loop     : {bare_peak:7.1f} MiB")
    try:
        for label, directory in rss.items():
            for workers in ("0", "2"):
                command = ae(
                    "encode", directory, "-m", model, "-o", work / f"z_{label}.npy", "-q", "--workers", workers
                )
                started = time.perf_counter()
                peak = peak_rss_mib(command, work)
                took = time.perf_counter() - started
                print(
                    f"  {label:>4} PNGs, ae --workers {workers}: {peak:7.1f} MiB   ({took:.1f} s)   target < 1536 MiB"
                )
    finally:
        if big.is_dir() and not args.keep:
            shutil.rmtree(big, ignore_errors=True)


def fmt_all(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


if __name__ == "__main__":
    main()

"""Encoding with onnxruntime against `ae encode`, in images/s, on the same 10,000 images in one run.

The model is `ae train sample --epochs 1` (the default conv autoencoder, 28x28 grey, latent 32)
exported by `ae export`. The images are Fashion-MNIST's test set (seeded blobs without a local
copy) in one uint8 .npy file, so decoding image files costs neither side anything. Two pairs:

  in one process, start-up excluded: aecli's infer.encode on the .npy (what `ae encode` calls,
      with its loader: array rows to float, fitted to the model) against InferenceSession.run on
      uint8 batches of the same array (the graph scales and fits them itself); batches of 256;
  as commands, start-up included: `ae encode images.npy -o z.npy` against a 15-line script that
      loads the array, runs the graph with onnxruntime and numpy alone and saves the latents.

    python benchmarks/onnx_encode.py [--rounds 5] [--workdir DIR]

Prints the median of interleaved rounds for each side, the ratio onnxruntime / ae in images/s
(above 1: onnxruntime is faster), and the largest difference between the two sides' latents.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import fashion_mnist, workdir

from aecli import infer
from aecli.data import open_inputs
from aecli.data.named import fashion_mnist_dirs

BATCH = 256

# The deployer's side as a command: onnxruntime and numpy, nothing else.
ORT_SCRIPT = """
import sys
import numpy as np
import onnxruntime

images, graph, out = sys.argv[1:]
pixels = np.load(images)[..., None]  # (N, 28, 28) uint8 -> (N, H, W, C)
session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
rows = [session.run(["latent"], {"pixels": pixels[s : s + 256]})[0] for s in range(0, len(pixels), 256)]
np.save(out, np.concatenate(rows))
"""


def test_images() -> np.ndarray:
    """(10000, 28, 28) uint8: Fashion-MNIST's test set where a local copy exists, else seeded blobs."""
    if any((d / "t10k-images-idx3-ubyte.gz").is_file() for d in fashion_mnist_dirs()):
        x, _ = fashion_mnist("test")
        return x[:, 0].mul(255).round().to(torch.uint8).numpy()
    coarse = torch.rand(10_000, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.interpolate(coarse, size=28, mode="bilinear")[:, 0].mul(255).to(torch.uint8).numpy()


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, help="for the images, model and graphs (default: a temporary one)")
    args = parser.parse_args()
    with workdir(args.workdir, "onnx-encode-") as work:
        measure(work, args.rounds)


def measure(work: Path, rounds: int) -> None:
    import onnxruntime

    ae = [sys.executable, "-m", "aecli"]
    images = test_images()
    np.save(work / "images.npy", images)
    model, graph = work / "model.safetensors", work / "model.encode.onnx"
    if not model.is_file():
        subprocess.run([*ae, "train", "sample", "--epochs", "1", "-o", model, "-q"], cwd=work, check=True)
    export = [*ae, "export", "-m", model, "-o", work / "model.onnx", "-q"]
    subprocess.run(export, cwd=work, check=True, stdout=subprocess.DEVNULL)
    (work / "ort_encode.py").write_text(ORT_SCRIPT)

    loaded = infer.load_model(model, "cpu")
    inputs = open_inputs([str(work / "images.npy")])
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    pixels = images[..., None]

    def library() -> np.ndarray:
        return infer.encode(loaded, inputs, batch_size=BATCH, workers=0).vectors

    def runtime() -> np.ndarray:
        return np.concatenate(
            [session.run(["latent"], {"pixels": pixels[s : s + BATCH]})[0] for s in range(0, len(pixels), BATCH)]
        )

    commands = {
        "ae": [*ae, "encode", "images.npy", "-m", model, "-o", "z_ae.npy", "-q", "--workers", "0"],
        "ort": [sys.executable, "ort_encode.py", "images.npy", graph, "z_ort.npy"],
    }
    library(), runtime()  # warm up: first-call allocations, the page cache
    load_before = os.getloadavg()[0]
    seconds: dict[str, list[float]] = {k: [] for k in ("library", "runtime", "ae", "ort")}
    for _ in range(rounds):  # interleaved, so drift on a busy machine hits every side alike
        took, z_library = timed(library)
        seconds["library"].append(took)
        took, z_runtime = timed(runtime)
        seconds["runtime"].append(took)
        for name, command in commands.items():
            seconds[name].append(timed(lambda: subprocess.run(command, cwd=work, check=True))[0])
    load_after = os.getloadavg()[0]
    median = {k: statistics.median(v) for k, v in seconds.items()}
    rate = {k: len(images) / v for k, v in median.items()}
    same_cli = float(np.abs(np.load(work / "z_ort.npy") - np.load(work / "z_ae.npy")).max())

    print(f"{len(images)} images 28x28 uint8, batches of {BATCH}, {os.cpu_count()} cores; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__} "
          f"(default threads: one per core)")  # fmt: skip
    print(f"load average (1 min) before/after timing: {load_before:.2f} / {load_after:.2f}")
    print(f"median of {rounds} interleaved rounds:")
    print(f"  in process   ae infer.encode        {median['library']:6.3f} s {rate['library']:9.0f} images/s")
    print(f"               onnxruntime run         {median['runtime']:6.3f} s {rate['runtime']:9.0f} images/s"
          f"   onnxruntime/ae {rate['runtime'] / rate['library']:.2f}")  # fmt: skip
    print(f"  as commands  ae encode               {median['ae']:6.3f} s {rate['ae']:9.0f} images/s")
    print(f"               onnxruntime script      {median['ort']:6.3f} s {rate['ort']:9.0f} images/s"
          f"   onnxruntime/ae {rate['ort'] / rate['ae']:.2f}")  # fmt: skip
    print(f"largest difference between the latents: in process {np.abs(z_runtime - z_library).max():.2g}, "
          f"commands {same_cli:.2g}")  # fmt: skip


if __name__ == "__main__":
    main()

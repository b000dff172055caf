"""Does `ae train --compile` pay? fit() with and without it, in one process, sides alternated.

Fashion-MNIST's first N training images (an .npy of them, so reading costs nothing), E epochs;
images/s counts epochs 2..E only (the window gpu.py's training rows use), so torch.compile's
warm-up (its trial before the first epoch, any recompile in it) is left out; the wall time shows it.
Models: the seed `ae` (conv) and the unet denoiser. Prints compile / plain per model and round.

--agree: instead, every registered variant trained both ways on 64 small random images (3 epochs,
batch 24: a short last batch), their final training losses side by side, and any note (a compile
that failed and was left out).

    python benchmarks/compile.py [--device cpu] [--images 12000] [--epochs 3] [--rounds 2] [--batch 128]
    python benchmarks/compile.py --agree
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from _common import fashion_mnist
from aecli.config import load_settings
from aecli.data import open_inputs
from aecli.models.registry import list_variants
from aecli.train import Callbacks, fit
from gpu import time_ae

MODELS = {"seed ae (conv)": {}, "unet denoiser": {"variant": "denoising", "arch": "unet"}}


class Notes(Callbacks):
    def __init__(self):
        self.notes = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def agree(device: str, work: Path) -> None:
    """Each variant's final training loss, plain and compiled, on the same images and seed."""
    np.save(work / "small.npy", (np.random.default_rng(0).random((64, 16, 16)) * 255).astype(np.uint8))
    images = open_inputs([str(work / "small.npy")])
    print("| variant | plain final loss | compiled final loss | compiled / plain | note |")
    print("| --- | ---: | ---: | ---: | --- |", flush=True)
    for variant in list_variants():
        losses, notes = [], Notes()
        for compiled in (False, True):
            settings = load_settings(None, {"variant": variant, "epochs": 3, "batch_size": 24, "min_steps": 0,
                                            "compile": compiled, "device": device})  # fmt: skip
            trained = fit(images, settings, work / f"{variant}.safetensors", callbacks=notes)
            losses.append(trained.training["train_loss"][-1])
        note = "; ".join(n for n in notes.notes if "compile" in n)[:120]
        print(f"| {variant} | {losses[0]:.5g} | {losses[1]:.5g} | {losses[1] / losses[0]:.3f} | {note} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--agree", action="store_true", help="every variant's final loss, plain and compiled")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="compile-bench-"))
    if args.agree:
        return agree(args.device, work)
    x, _ = fashion_mnist("train")
    np.save(work / "images.npy", x[: args.images, 0].mul(255).round().to(torch.uint8).numpy())
    images = open_inputs([str(work / "images.npy")])
    print(f"{args.images} images, {args.epochs} epochs, batch {args.batch}, {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)  # fmt: skip
    print("| model | round | plain images/s | compile images/s | compile / plain | wall s plain / compile |")
    print("| --- | --- | ---: | ---: | ---: | --- |", flush=True)
    for name, overrides in MODELS.items():
        ratios = []
        for round_ in range(1, args.rounds + 1):
            rates, walls = [], []
            for compiled in (False, True):
                settings, out = {**overrides, "compile": compiled}, work / "m.safetensors"
                window, wall, _ = time_ae(images, settings, args.batch, args.epochs, args.device, out, 3600)
                count, start, end, _ = window
                rates.append(count / (end - start))
                walls.append(wall)
            ratios.append(rates[1] / rates[0])
            print(f"| {name} | {round_} | {rates[0]:,.0f} | {rates[1]:,.0f} | {ratios[-1]:.2f} | "
                  f"{walls[0]:.1f} / {walls[1]:.1f} |", flush=True)  # fmt: skip
        print(f"| {name} | median | | | **{statistics.median(ratios):.2f}** | |", flush=True)


if __name__ == "__main__":
    main()

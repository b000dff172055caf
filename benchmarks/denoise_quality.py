"""Does the denoising variant denoise? Mean PSNR on 1,000 noisy Fashion-MNIST test images.

Trains `ae train --variant denoising` with default settings on the first 5,000 training images
(sigma 0.2), and the seed recipe's bottleneck DAE (`--arch conv`, the seed template) the same
way, then reports mean per-image PSNR against the clean images for: the noisy input, the seed
DAE and the default DAE. Target: >= 24 dB with at most 5 minutes of CPU training.

    python benchmarks/denoise_quality.py [--train 5000] [--test 1000] [--sigma 0.2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from _common import ae, fashion_mnist
from aecli.modelfile import load
from aecli.noise import corrupt


def psnr(estimate: torch.Tensor, clean: torch.Tensor) -> float:
    mse = (estimate - clean).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


@torch.no_grad()
def denoise(path: Path, noisy: torch.Tensor) -> torch.Tensor:
    model = load(path).model
    return torch.cat([model(noisy[i : i + 500]) for i in range(0, len(noisy), 500)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--sigma", type=float, default=0.2)
    args = parser.parse_args()
    train, _ = fashion_mnist("train")
    test, _ = fashion_mnist("test")
    clean = test[: args.test]
    torch.manual_seed(1234)
    noisy = corrupt(clean, "gaussian", args.sigma)
    rows = [("noisy input", psnr(noisy, clean), None)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.npy"
        np.save(data, (train[: args.train, 0] * 255).round().to(torch.uint8).numpy())
        for name, extra in (("seed DAE (--arch conv)", ["--arch", "conv"]), ("ae denoising (defaults)", [])):
            out = Path(tmp) / "dae.safetensors"
            ae("train", data, "--variant", "denoising", "--sigma", args.sigma, *extra, "-q", "-o", out)
            seconds = load(out).training["duration_s"]
            rows.append((name, psnr(denoise(out, noisy), clean), seconds))
    print(f"Fashion-MNIST, {args.train} train / {args.test} test images, gaussian sigma {args.sigma}")
    for name, value, seconds in rows:
        trained = f"   trained in {seconds:6.1f} s" if seconds is not None else ""
        print(f"{name:26s} {value:6.2f} dB{trained}")


if __name__ == "__main__":
    main()

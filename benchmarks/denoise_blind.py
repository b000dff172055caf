"""One denoiser blind to the noise level against one per level, on the same noisy test images.

Issue 14, part 2: `ae train --variant denoising --sigma 0:LO` draws one level per image from the
range, so one model serves every level and `ae denoise` needs no level. Here one blind model
(sigma drawn from [0, 50/255]) and one `ae` model per level (5, 15, 25 and 50/255), all trained
alike (the same images, epochs and seed), denoise the same first --test Fashion-MNIST test
images, noised as `ae denoise --add-noise SIGMA --seed 0` noises them; PSNR is the mean per image
(aecli.scoring.quality, as `ae denoise --report` gives it). BM3D (the `bm3d` package, if
installed; benchmark-only) gets the true sigma, on the first --bm3d images (about 1 s an image).
Target: the blind model within 0.3 dB of the per-level models.

Part 4 (with --poisson): photon noise at --gain (`--noise poisson`): a model trained on it, the
blind gaussian model, and BM3D given the noise's std at mid-grey, sqrt(0.5 / gain).

Budget: every model is --train images x --epochs in batches of --batch-size; the defaults
(3,000 x 24 in 16s: 4,500 steps, which a blind model needs, as it learns every level) train the
5 (or 6) models in about half an hour on one thread.

    python benchmarks/denoise_blind.py [--train 3000] [--epochs 24] [--batch-size 16] [--test 1000]
        [--bm3d 100] [--poisson] [--blind-top 50] [--ae-flags=--no-residual] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import fashion_mnist, workdir

from aecli import infer
from aecli.scoring.quality import psnr

LEVELS = (5, 15, 25, 50)  # sigma in 8-bit steps: x / 255 in [0, 1]


def train(work: Path, data: Path, name: str, args: argparse.Namespace, *noise: str) -> tuple[Path, float]:
    """`ae train` in a new process, as a user runs it; the model's path and wall seconds."""
    model = work / f"{name}.safetensors"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "aecli", "train", str(data), "--variant", "denoising", *noise,
         "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--device", "cpu", "-q", "-o", str(model),
         *args.ae_flags.split()],
        check=True,
    )  # fmt: skip
    return model, time.perf_counter() - started


def noisy_set(clean: torch.Tensor, sigma: float, kind: str = "gaussian", gain: float = 30.0) -> torch.Tensor:
    """Image i noised as `ae denoise --add-noise SIGMA --seed 0` noises it: the same for every method."""
    return torch.stack([infer.add_noise(x, sigma, 0, i, kind, gain) for i, x in enumerate(clean)])


@torch.no_grad()
def through(model: Path, noisy: torch.Tensor) -> torch.Tensor:
    loaded = infer.load_model(model, "cpu")
    return torch.cat([loaded(noisy[s : s + 250]) for s in range(0, len(noisy), 250)])


def mean_psnr(x: torch.Tensor, clean: torch.Tensor) -> float:
    return float(psnr(x.clamp(0, 1), clean).mean())


def bm3d_psnr(noisy: torch.Tensor, clean: torch.Tensor, sigma: float) -> float | None:
    try:
        import bm3d
    except ImportError:
        return None
    out = [torch.from_numpy(np.asarray(bm3d.bm3d(x[0].double().numpy(), sigma_psd=sigma), np.float32)) for x in noisy]
    return mean_psnr(torch.stack(out)[:, None], clean)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=3000, help="training images per model")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16, help="more, smaller steps than the default 32")
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--bm3d", type=int, default=100, help="BM3D on this many of the test images (0: none)")
    parser.add_argument("--poisson", action="store_true", help="add photon-noise rows (part 4)")
    parser.add_argument("--gain", type=float, default=30.0)
    parser.add_argument("--blind-top", type=float, default=50, help="the blind model's range is 0 to this / 255")
    parser.add_argument(
        "--ae-flags", default="", help="more `ae train` flags for every model, as --ae-flags=--no-residual"
    )
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    train_x, _ = fashion_mnist("train")
    clean = fashion_mnist("test")[0][: args.test]
    started = time.perf_counter()
    with workdir(args.workdir, "denoise-blind-") as work:
        data = work / "train.npy"
        np.save(data, (train_x[: args.train, 0] * 255).round().to(torch.uint8).numpy())
        blind, blind_s = train(work, data, "blind", args, "--sigma", f"0:{args.blind_top / 255:.6f}")
        print(f"{'sigma':>8s} {'noisy':>7s} {'per-level':>9s} {'blind':>7s} {'blind-per':>9s} {'BM3D*':>7s} "
              f"{'per-level*':>10s}  (PSNR dB)")  # fmt: skip
        gaps, seconds = [], [blind_s]
        for level in LEVELS:
            sigma = level / 255
            model, s = train(work, data, f"level{level}", args, "--sigma", f"{sigma:.6f}")
            seconds.append(s)
            noisy = noisy_set(clean, sigma)
            mine = through(model, noisy)
            own, one = mean_psnr(mine, clean), mean_psnr(through(blind, noisy), clean)
            b = bm3d_psnr(noisy[: args.bm3d], clean[: args.bm3d], sigma) if args.bm3d else None
            gaps.append(one - own)
            bm = f"{b:7.2f} {mean_psnr(mine[: args.bm3d], clean[: args.bm3d]):10.2f}" if b is not None else ""
            print(f"{level:>4d}/255 {mean_psnr(noisy, clean):7.2f} {own:9.2f} {one:7.2f} {one - own:+9.2f} {bm}")
        worst = min(gaps)
        print(f"blind vs per-level: worst {worst:+.2f} dB, mean {np.mean(gaps):+.2f} dB; target >= -0.30 dB: "
              + ("met" if worst >= -0.3 else f"missed by {-0.3 - worst:.2f} dB"))  # fmt: skip
        if args.poisson:
            model, s = train(work, data, "poisson", args, "--noise", "poisson", "--gain", f"{args.gain:g}")
            seconds.append(s)
            noisy = noisy_set(clean, 0.0, "poisson", args.gain)
            own, one = mean_psnr(through(model, noisy), clean), mean_psnr(through(blind, noisy), clean)
            sigma = (0.5 / args.gain) ** 0.5
            b = bm3d_psnr(noisy[: args.bm3d], clean[: args.bm3d], sigma) if args.bm3d else None
            bm = f", BM3D (sigma {sigma:.3f}) {b:.2f}" if b is not None else ""
            print(f"poisson gain {args.gain:g}: noisy {mean_psnr(noisy, clean):.2f}, poisson-trained {own:.2f}, "
                  f"blind gaussian {one:.2f}{bm} dB")  # fmt: skip
        print(f"* on the first {args.bm3d} images only (BM3D's time). {len(seconds)} models trained in "
              f"{sum(seconds):.0f} s ({args.train} images x {args.epochs} epochs each); "
              f"whole run {time.perf_counter() - started:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()

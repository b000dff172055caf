"""Denoising learnt from noisy images alone: `--variant noise2void` against the supervised denoiser,
CAREamics' Noise2Void and BM3D.

fmnist: the first 1,000 Fashion-MNIST test images with Gaussian noise of std 0.2 (fixed seed,
clipped, 8-bit) are all noise2void sees: it trains on them and denoises them. The supervised
`--variant denoising` trains on the first 5,000 clean training images, corrupting them itself, and
denoises the very same noisy file. CAREamics' N2V (--peer-python with `careamics`) trains on the
same noisy images for the wall time noise2void's training took. Target: within 1.5 dB of the
supervised denoiser, and at least as good as CAREamics.

camera: scikit-image's `camera` (512x512 grey) at sigma 25/255: noise2void trains on that one
noisy image (random 64 px patches) and denoises it; BM3D (the `bm3d` package, told the true sigma)
denoises the same 8-bit noisy PNG.

    python benchmarks/denoise_selfsupervised.py --peer-python /tmp/care/bin/python [--case fmnist|camera|all]

The peer Python needs careamics, bm3d and scikit-image (a venv of its own: never ae's); without
it, or with one of them missing, that row is skipped with a note.
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
from _denoising import ae_silent, print_table, report_means

from aecli.scoring.quality import psnr, ssim

HERE = Path(__file__).resolve().parent
N2V_FMNIST = ["--variant", "noise2void", "--epochs", "12", "--mask-fraction", "0.1", "--lr", "5e-3"]
SUPERVISED_FMNIST = ["--variant", "denoising", "--sigma", "0.2", "--epochs", "4"]
N2V_CAMERA = ["--variant", "noise2void", "--patch-size", "64", "--patches-per-image", "384", "--epochs", "4",
              "--mask-fraction", "0.05", "--lr", "5e-3", "--val-split", "0"]  # fmt: skip
CAMERA_SIGMA = 25 / 255


def noisy_bytes(x: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Pixels in [0, 1] plus Gaussian noise, clipped and stored as 8 bits, as a camera would."""
    rng = np.random.default_rng(seed)
    return (np.clip(x + sigma * rng.standard_normal(x.shape), 0, 1) * 255).round().astype(np.uint8)


def quality(x: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    """Mean per-image PSNR and SSIM with ae's own definitions, for rows not measured by `ae denoise`."""
    a, b = (torch.from_numpy(np.asarray(v, np.float32)).reshape(-1, 1, *v.shape[-2:]) for v in (x, clean))
    return float(psnr(a, b).mean()), float(ssim(a, b).mean())


def peer(python: str | None, *args: object) -> str | None:
    """A peer's stdout, or None (with a note) where the peer Python or its package is missing."""
    if not python:
        print(f"skipped {args[0]}: no --peer-python", file=sys.stderr)
        return None
    command = [python, str(HERE / "_selfsupervised_peers.py"), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        print(f"skipped {args[0]}: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return done.stdout


def fmnist_case(args: argparse.Namespace, work: Path) -> None:
    train, _ = fashion_mnist("train")
    test, _ = fashion_mnist("test")
    clean = (test[: args.test, 0].numpy() * 255).round().astype(np.uint8)
    np.save(work / "clean.npy", clean)
    np.save(work / "noisy.npy", noisy_bytes(clean / 255, 0.2, seed=0))
    np.save(work / "train-clean.npy", (train[: args.train, 0].numpy() * 255).round().astype(np.uint8))
    rows, before = [], set()
    for name, data, flags in (
        ("ae noise2void (noisy images only)", "noisy.npy", N2V_FMNIST),
        ("ae denoising (supervised: 5,000 clean images)", "train-clean.npy", SUPERVISED_FMNIST),
    ):
        model = work / "model.safetensors"
        train_s = ae_silent("train", work / data, *flags, "-q", "-o", model)
        seconds = ae_silent("denoise", work / "noisy.npy", "-m", model, "--reference", work / "clean.npy",
                            "--report", work / "r.csv", "-q", "-o", work / "out")  # fmt: skip
        m = report_means(work / "r.csv")
        before.add(round(m["psnr_before"], 6))
        rows.append((name, m["psnr_after"], m["ssim_after"], train_s, seconds))
    n2v_s = rows[0][3]
    out = peer(args.peer_python, "careamics", work / "noisy.npy", f"{n2v_s:.1f}", work / "care.npy")
    if out is not None:
        care = quality(np.load(work / "care.npy"), clean / 255)
        rows.append(("CAREamics N2V (same noisy images, same wall time)", *care, float(out.split()[-1]), None))
    p0, s0 = quality(np.load(work / "noisy.npy") / 255, clean / 255)
    print_table(
        f"Fashion-MNIST: {args.test} noisy test images (gaussian sigma 0.2); mean per-image PSNR/SSIM",
        [("noisy input", p0, s0, None, None), *rows],
    )
    ours, supervised = rows[0][1], rows[1][1]
    print(f"noise2void vs supervised: {ours - supervised:+.2f} dB (target >= -1.5)")
    if len(rows) > 2:
        print(f"noise2void vs CAREamics N2V: {ours - rows[2][1]:+.2f} dB (target >= 0)")


def camera_case(args: argparse.Namespace, work: Path) -> None:
    from PIL import Image

    if peer(args.peer_python, "camera", work / "camera.png") is None:
        return
    clean = np.asarray(Image.open(work / "camera.png"), np.float32) / 255
    (work / "noisy").mkdir(exist_ok=True)
    Image.fromarray(noisy_bytes(clean, CAMERA_SIGMA, seed=0)).save(work / "noisy" / "camera.png")
    model = work / "camera.safetensors"
    train_s = ae_silent("train", work / "noisy" / "camera.png", *N2V_CAMERA, "-q", "-o", model)
    seconds = ae_silent("denoise", work / "noisy" / "camera.png", "-m", model, "-q", "-o", work / "out")
    ours = np.asarray(Image.open(work / "out" / "camera.png"), np.float32) / 255
    noisy = np.asarray(Image.open(work / "noisy" / "camera.png"), np.float32) / 255
    rows = [("noisy input", *quality(noisy, clean), None, None),
            ("ae noise2void (the one noisy image)", *quality(ours, clean), train_s, seconds)]  # fmt: skip
    started = time.perf_counter()
    if peer(args.peer_python, "bm3d", work / "noisy" / "camera.png", CAMERA_SIGMA, work / "bm3d.npy") is not None:
        bm3d = quality(np.load(work / "bm3d.npy"), clean)
        rows.append(("BM3D (true sigma)", *bm3d, None, time.perf_counter() - started))
    print_table("camera (512x512 grey), gaussian sigma 25/255, 8-bit", rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("fmnist", "camera", "all"), default="all")
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--peer-python", help="a Python with careamics, bm3d and scikit-image")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    with workdir(args.workdir, "ae-n2v-") as work:
        if args.case in ("fmnist", "all"):
            fmnist_case(args, work)
        if args.case in ("camera", "all"):
            camera_case(args, work)


if __name__ == "__main__":
    main()

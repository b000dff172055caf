"""Generative sample quality on Fashion-MNIST: ae's VAE, beta-VAE, two-stage (GMM) samplers,
conditional VAE and VQ-VAE against pythae's VAE and VQ-VAE, trained on the same images in the same run.

Each row draws --samples images (default 10,000) and is judged against the 10,000 test images by
a small CNN classifier trained here first (3 epochs on the training images, seeded; its test
accuracy is printed), since no Inception weights may be downloaded:
  FMNIST-FD    Fréchet distance between the Gaussians of the classifier's 128 penultimate features
               of the samples and of the test images (lower is better; comparable only within a run)
  confidence   mean max softmax: how much the samples look like some class
  classes      exp(entropy) of the histogram of predicted classes: effective classes out of 10
  match        conditional rows: the share of samples classified as the class asked for (target >= 90 %)
The reference row, real training images, is the floor FD can reach at this sample size.

ae rows are trained by `ae train` (a new process) on the training images written to WORK/train.npz
with their labels (which `--condition class` reads), and sampled through aecli.infer.sample:
  vae       --variant vae                      beta-vae  --variant vae --beta 4
  vae-bce   --variant vae --loss bce --latent-dim 8 (examples/vae.yaml's recipe)
  vae-resize  --variant vae --upsample resize (no checkerboard marks)
  vae+gmm   vae's model, --sampler gmm          ae+gmm    --variant ae, --sampler gmm
  cvae      --variant vae --condition class, --samples/10 of each class; cvae-bce: with vae-bce's recipe
  vqvae     --variant vqvae, its default sampler (only where the variant is registered)
Peers (--peer-python: a venv with pythae, never ae's): pythae's VAE (NormalSampler and
GaussianMixtureSampler) and VQ-VAE (PixelCNNSampler) on ae's default backbone; see _generation_peers.py.

    OMP_NUM_THREADS=1 python benchmarks/generation.py --peer-python /tmp/pythae/bin/python [--epochs 10]
    python benchmarks/generation.py --train-limit 3000 --epochs 2 --samples 1000 --no-peers   (a quick check)

Every file, model and sample grid (WORK/grid-*.png: each row's first 64 samples; cvae's, 8 of each
class) stays in --work.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import ROOT, fashion_mnist, workdir
from torch import nn

from aecli import infer, samplers
from aecli.io.pictures import save_grid
from aecli.models.registry import list_variants

HERE = Path(__file__).resolve().parent
CLASSIFIER_EPOCHS = 3  # about 90 % test accuracy: enough for features that tell garments apart


@dataclass(frozen=True)
class Row:
    """One ae generator: the `ae train` flags of its model, and how it is sampled."""

    flags: tuple[str, ...]
    sampler: str | None = None  # None: infer.sample's default (normal, or the variant's own)
    conditional: bool = False


ROWS = {
    "vae": Row(("--variant", "vae"), "normal"),
    # examples/vae.yaml's recipe: bce suits these mostly dark images, and 8 numbers sample better than 32
    "vae-bce": Row(("--variant", "vae", "--loss", "bce", "--latent-dim", "8"), "normal"),
    # the decoder without checkerboard marks: what does it cost in FD?
    "vae-resize": Row(("--variant", "vae", "--upsample", "resize"), "normal"),
    "beta-vae": Row(("--variant", "vae", "--beta", "4"), "normal"),
    "vae+gmm": Row(("--variant", "vae"), "gmm"),
    "ae+gmm": Row(("--variant", "ae"), "gmm"),
    "cvae": Row(("--variant", "vae", "--condition", "class"), "normal", conditional=True),
    "cvae-bce": Row(("--variant", "vae", "--condition", "class", "--loss", "bce", "--latent-dim", "8"), "normal",
                    conditional=True),
    "vqvae": Row(("--variant", "vqvae")),
}


@dataclass
class Result:
    name: str
    fd: float
    confidence: float
    classes: float
    match: float | None = None
    train_s: float | None = None
    sample_s: float | None = None


class Classifier(nn.Module):
    """Two conv blocks and a 128-wide layer whose activations are the features FD compares."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(128, 10)

    @torch.no_grad()
    def measure(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features (float64) and class probabilities of (N, 1, 28, 28) images."""
        self.eval()
        feats = torch.cat([self.features(x[i : i + 1000].float()) for i in range(0, len(x), 1000)])
        return feats.double().numpy(), torch.softmax(self.head(feats), 1).numpy()


def train_classifier(x: torch.Tensor, y: np.ndarray) -> Classifier:
    torch.manual_seed(0)
    net = Classifier()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    labels = torch.from_numpy(y.astype(np.int64))
    net.train()
    for _ in range(CLASSIFIER_EPOCHS):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            rows = order[i : i + 128]
            loss = nn.functional.cross_entropy(net.head(net.features(x[rows])), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(0), np.cov(features, rowvar=False)


def frechet(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """|m1 - m2|² + tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½), the square roots by symmetric eigensolves (no scipy)."""
    (m1, s1), (m2, s2) = a, b
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(w.clip(0))) @ v.T
    cross = np.sqrt(np.linalg.eigvalsh(root @ s2 @ root).clip(0)).sum()
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


class Judge:
    """The classifier and the test images' feature Gaussian: what every row is measured by."""

    def __init__(self, net: Classifier, test: torch.Tensor):
        self.net = net
        self.reference = gaussian(net.measure(test)[0])

    def __call__(self, name: str, images: torch.Tensor, asked: np.ndarray | None = None, **times) -> Result:
        features, probs = self.net.measure(images.reshape(-1, 1, 28, 28))
        predicted = probs.argmax(1)
        share = np.bincount(predicted, minlength=10) / len(predicted)
        entropy = -(share[share > 0] * np.log(share[share > 0])).sum()
        match = None if asked is None else float((predicted == asked).mean())
        fd = frechet(gaussian(features), self.reference)
        return Result(name, fd, float(probs.max(1).mean()), math.exp(entropy), match, **times)


def train_ae(work: Path, flags: tuple[str, ...], epochs: int) -> tuple[Path, float]:
    """`ae train` on WORK/train.npz in a new process, as a user runs it; the model and wall seconds."""
    out = work / ("-".join(f.lstrip("-") for f in flags) + ".safetensors")
    command = [sys.executable, "-m", "aecli", "train", work / "train.npz", *flags,
               "--epochs", epochs, "--seed", 0, "-q", "-o", out]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(list(map(str, command)), check=True, cwd=ROOT)
    return out, time.perf_counter() - started


def sample_ae(model: Path, row: Row, n: int) -> tuple[torch.Tensor, np.ndarray | None]:
    """n images from the model (a conditional one: n/10 of each class) and the class each was asked for."""
    loaded = infer.load_model(model, "cpu")
    sampler = samplers.parse(row.sampler) if row.sampler else None
    if not row.conditional:
        return infer.sample(loaded, n, seed=0, sampler=sampler)[0], None
    classes = loaded.capabilities.classes  # "0".."9": the labels train.npz holds
    per = n // len(classes)
    drawn = [infer.sample(loaded, per, seed=k, sampler=sampler, label=c)[0] for k, c in enumerate(classes)]
    return torch.cat(drawn), np.repeat([int(c) for c in classes], per)


def pythae_rows(python: str, work: Path, args: argparse.Namespace) -> list[tuple[str, np.ndarray, float, float]]:
    """(row, samples, training seconds, sampling seconds) of each pythae model; none, with a note, on failure."""
    rows = []
    for model in ("vae", "vqvae"):
        log = work / f"pythae-{model}.log"
        command = [python, HERE / "_generation_peers.py", model, work / "train.npz", args.epochs, args.samples, work]
        with open(log, "w") as f:
            done = subprocess.run(list(map(str, command)), stdout=f, stderr=subprocess.STDOUT)
        if done.returncode:
            last = (log.read_text().strip().splitlines() or ["no output"])[-1]
            print(f"skipped pythae {model}: {last} (see {log})", file=sys.stderr)
            continue
        report = json.loads((work / f"pythae-{model}.json").read_text())
        for sampler, seconds in report["samplers"].items():
            samples = np.load(work / f"pythae-{model}-{sampler}.npy")
            rows.append((f"pythae {model} ({sampler})", samples, report["train_s"], seconds))
    return rows


def slug(name: str) -> str:
    """A row's name as a file name: `pythae vae (gmm)` is pythae-vae-gmm."""
    return re.sub(r"[^\w+]+", "-", name).strip("-")


def print_table(results: list[Result], header: str) -> None:
    print(f"\n{header}\n")
    print("| row | FMNIST-FD | confidence | classes (of 10) | match | train s | sample s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    cell = lambda v, fmt: "" if v is None else format(v, fmt)  # noqa: E731
    for r in results:
        print(f"| {r.name} | {r.fd:.2f} | {r.confidence:.3f} | {r.classes:.2f} | {cell(r.match, '.1%')} "
              f"| {cell(r.train_s, '.0f')} | {cell(r.sample_s, '.1f')} |")  # fmt: skip


def verdict(results: list[Result]) -> str:
    ours = [r for r in results if r.name.startswith("ae ")]
    peers = [r for r in results if r.name.startswith("pythae ")]
    parts = []
    if ours and peers:
        a, p = min(ours, key=lambda r: r.fd), min(peers, key=lambda r: r.fd)
        parts.append(f"ae's best FD {a.fd:.2f} ({a.name}) / pythae's best {p.fd:.2f} ({p.name}) = {a.fd / p.fd:.2f}x")
    parts += [f"{r.name}: {r.match:.1%} of samples classified as the class asked for (target >= 90 %)"
              for r in results if r.match is not None]  # fmt: skip
    return "verdict: " + ("; ".join(parts) or "nothing to compare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(ROWS), help=f"ae rows to run, of {', '.join(ROWS)}")
    parser.add_argument("--epochs", type=int, default=10, help="for every model, ae's and the peers'")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--train-limit", type=int, help="only the first N training images (the classifier's too)")
    parser.add_argument("--work", type=Path, help="folder for every file made (default: a temporary one)")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--peer-python", help="a Python with pythae (its own venv)")
    args = parser.parse_args()
    wanted = args.variants.split(",")
    if unknown := sorted(set(wanted) - set(ROWS)):
        parser.error(f"unknown --variants {', '.join(unknown)} (known: {', '.join(ROWS)})")

    train, train_labels = fashion_mnist("train")
    test, test_labels = fashion_mnist("test")
    train, train_labels = train[: args.train_limit], train_labels[: args.train_limit]
    with workdir(args.work, "ae-generation-") as work:
        np.savez(work / "train.npz", images=train[:, 0].mul(255).round().to(torch.uint8).numpy(),
                 labels=train_labels.astype(np.int64))  # fmt: skip
        started = time.perf_counter()
        net = train_classifier(train, train_labels)
        accuracy = (net.measure(test)[1].argmax(1) == test_labels).mean()
        print(f"classifier: {accuracy:.2%} test accuracy ({CLASSIFIER_EPOCHS} epochs on {len(train)} "
              f"images, {time.perf_counter() - started:.0f} s)", file=sys.stderr)  # fmt: skip
        judge = Judge(net, test)
        real = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: args.samples]
        results = [judge(f"real training images ({len(real)})", train[real])]

        models: dict[tuple[str, ...], tuple[Path, float]] = {}
        for name in wanted:
            row = ROWS[name]
            if row.flags[1] not in list_variants():
                print(f"skipped {name}: ae has no --variant {row.flags[1]} yet", file=sys.stderr)
                continue
            if row.flags not in models:
                models[row.flags] = train_ae(work, row.flags, args.epochs)
            model, train_s = models[row.flags]
            started = time.perf_counter()
            images, asked = sample_ae(model, row, args.samples)
            sample_s = time.perf_counter() - started
            shown = slice(64) if asked is None else np.concatenate([np.flatnonzero(asked == k)[:8] for k in range(10)])
            save_grid(work / f"grid-{slug(f'ae {name}')}.png", images[shown])
            results.append(judge(f"ae {name}", images, asked, train_s=train_s, sample_s=sample_s))
            print(f"{name}: trained in {train_s:.0f} s, sampled in {sample_s:.1f} s", file=sys.stderr)

        if not args.no_peers and not args.peer_python:
            print("skipped pythae: no --peer-python (or pass --no-peers)", file=sys.stderr)
        elif not args.no_peers:
            for name, samples, train_s, sample_s in pythae_rows(args.peer_python, work, args):
                images = torch.from_numpy(samples)
                save_grid(work / f"grid-{slug(name)}.png", images[:64])
                results.append(judge(name, images, train_s=train_s, sample_s=sample_s))

        print_table(results, f"Fashion-MNIST generation: {args.samples} samples per row against the "
                    f"{len(test)} test images; {args.epochs} epochs on {len(train)} training images; "
                    "FMNIST-FD lower is better; classes = exp(entropy, in nats, of the predicted classes' "
                    f"histogram): effective classes of 10; classifier test accuracy {accuracy:.2%}")  # fmt: skip
        print(verdict(results))


if __name__ == "__main__":
    main()

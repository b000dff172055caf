"""One-class anomaly detection on Fashion-MNIST: train on one class, find the other nine.

For each class k, `ae train fashion-mnist:class=k` (default settings) learns what class k looks
like; every metric of `aecli.scoring.scores.score` then scores the 10,000 test images, anomalous being
any other class, and we report each metric's AUROC. `ae score --labels class=k` runs once per
class too, so the CLI's default metric and `--threshold auto` (at --fpr 0.01) are checked as a
user meets them: the share of class-k test images it flags should be near 1 %.

The baseline, trained in the same run: the seed recipe, i.e. the seed ConvAE (`--arch conv`)
with MSE loss, Adam at a constant 1e-3, batches of 128, 10 epochs, in a bare PyTorch loop over
all of class k's training images in memory, scored by per-image MSE.

    python benchmarks/oneclass_fmnist.py [--classes 0,1] [--epochs N] [--ae-flags "--latent-dim 16"]

Targets: mean AUROC >= 0.95 for the default metric; under 2 minutes of training per class;
at most about 2 % of normal test images flagged.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import fashion_mnist

from aecli.config import ModelConfig
from aecli.data import open_inputs
from aecli.infer import load_model
from aecli.scoring.metrics import auroc
from aecli.models import create_model
from aecli.scoring.scores import DEFAULT_METRIC, METRICS, score

NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def seed_auroc(x: torch.Tensor, test: torch.Tensor, anomalous: np.ndarray, epochs: int) -> tuple[float, float]:
    """The seed recipe's AUROC by per-image MSE, and its training seconds (tensors in memory)."""
    torch.manual_seed(0)
    model = create_model(ModelConfig(variant="ae", arch="conv").resolved(1, 28))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            batch = x[order[i : i + 128]]
            loss = torch.nn.functional.mse_loss(model(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        errors = torch.cat([(model(b) - b).pow(2).flatten(1).mean(1) for b in test.split(512)])
    return auroc(errors.numpy(), anomalous), seconds


def run_ae(*args: object) -> tuple[float, str]:
    """`ae ARGS` in a new process: wall seconds and its stderr (the evaluation line lands there)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "aecli", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"ae {' '.join(map(str, args))} failed ({done.returncode}):\n{done.stderr}")
    return time.perf_counter() - started, done.stderr


def cli_check(model: Path, k: int, out: Path) -> tuple[float, float]:
    """AUROC and the share of normal images flagged, from `ae score`'s own jsonl with defaults."""
    run_ae("score", "fashion-mnist:test", "-m", model, "--labels", f"class={k}", "--format", "jsonl", "-o", out, "-q")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    values = np.array([r["score"] for r in rows])
    labels = np.array([r["label"] for r in rows])
    flagged = np.array([r["anomalous"] for r in rows])
    return auroc(values, labels), float(flagged[labels == 0].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default=",".join(map(str, range(10))), help="comma-separated, e.g. 0,2,4,6")
    parser.add_argument("--epochs", type=int, help="override both sides' epochs (quick checks)")
    parser.add_argument("--ae-flags", default="", help="extra `ae train` flags, e.g. '--latent-dim 16'")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed baseline (flag sweeps)")
    parser.add_argument("--workdir", type=Path, help="keep model files here (default: a temporary folder)")
    args = parser.parse_args()
    classes = [int(c) for c in args.classes.split(",")]
    extra = shlex.split(args.ae_flags) + (["--epochs", str(args.epochs)] if args.epochs else [])
    train_x, train_y = fashion_mnist("train")
    test_x, test_y = fashion_mnist("test")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for k in classes:
            anomalous = test_y != k
            seed, seed_s = (np.nan, np.nan)
            if not args.no_seed:
                seed, seed_s = seed_auroc(train_x[torch.from_numpy(train_y == k)], test_x, anomalous, args.epochs or 10)
            model = work / f"ae-{k}.safetensors"
            train_s, _ = run_ae("train", f"fashion-mnist:class={k}", "-o", model, "-q", *extra)
            scores = score(load_model(model, "cpu"), open_inputs(["fashion-mnist:test"]))
            ours = {m: auroc(v, anomalous[scores.index]) for m, v in scores.values.items()}
            cli, flagged = cli_check(model, k, work / f"scores-{k}.jsonl")
            if abs(cli - ours[DEFAULT_METRIC]) > 1e-9:
                print(f"class {k}: CLI AUROC {cli:.6f} != library {ours[DEFAULT_METRIC]:.6f} ({DEFAULT_METRIC})")
            rows.append({"class": k, "seed": seed, "seed_s": seed_s, **ours, "train_s": train_s, "flagged": flagged})
            print(f"class {k} done: {DEFAULT_METRIC} {ours[DEFAULT_METRIC]:.4f}, seed {seed:.4f}", file=sys.stderr)
    print_table(rows, [m for m in METRICS if m in rows[0]])


def print_table(rows: list[dict], metrics: list[str]) -> None:
    """A markdown table, one row per class and one of means, best mean AUROC in bold."""
    columns = ["seed", *metrics]
    means = {c: float(np.mean([r[c] for r in rows])) for c in [*columns, "seed_s", "train_s", "flagged"]}
    best = max(metrics, key=lambda m: means[m])
    head = ["class", "seed AUROC", *metrics, "seed train s", "ae train s", "normal flagged"]
    print("| " + " | ".join(head) + " |")
    print("| --- " + "| ---: " * (len(head) - 1) + "|")
    for r in [*rows, {"class": "mean", **means}]:
        name = f"{r['class']} {NAMES[r['class']]}" if r["class"] != "mean" else "**mean**"
        cells = [f"**{r[c]:.4f}**" if r["class"] == "mean" and c == best else f"{r[c]:.4f}" for c in columns]
        cells += [f"{r['seed_s']:.1f}", f"{r['train_s']:.1f}", f"{r['flagged']:.2%}"]
        print("| " + " | ".join([name, *cells]) + " |")
    print(
        f"\nbest mean AUROC: {best} ({means[best]:.4f}); default metric {DEFAULT_METRIC}: {means[DEFAULT_METRIC]:.4f}"
    )


if __name__ == "__main__":
    main()

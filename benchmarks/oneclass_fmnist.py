"""One-class anomaly detection on Fashion-MNIST: train on one class, find the other nine.

For each class k and each variant (`ae`, the default, and `geometric`), `ae train
fashion-mnist:class=k --variant V` (default settings otherwise) learns what class k looks like;
every metric of `aecli.scoring.scores.score` then scores the 10,000 test images, anomalous being
any other class, and we report each metric's AUROC. `ae score --labels class=k` runs once per
class and variant too, so the variant's default metric and `--threshold auto` (at --fpr 0.01)
are checked as a user meets them: the share of class-k test images it flags should be near 1 %.

The baseline, trained in the same run: the seed recipe, i.e. the seed ConvAE (`--arch conv`)
with MSE loss, Adam at a constant 1e-3, batches of 128, 10 epochs, in a bare PyTorch loop over
all of class k's training images in memory, scored by per-image MSE. Peers, in the same run,
where PyOD is installed (`pip install -e .[bench]`): PyOD's `AutoEncoder` and `KNN` with the
library's defaults (verbose off), on raw pixels of the first 2,000 of class k's training images.

    python benchmarks/oneclass_fmnist.py [--classes 0,1] [--epochs N] [--ae-flags "--latent-dim 16"]

Targets: mean AUROC >= 0.95 for the default metric; under 2 minutes of training per class;
at most about 2 % of normal test images flagged.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
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
from aecli.models.registry import objective_class
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


PYOD_TRAIN = 2000  # PyOD's peers fit on the first 2,000 of class k's training images (KNN's cost grows with them)


def pyod_aurocs(x: torch.Tensor, test: torch.Tensor, anomalous: np.ndarray) -> dict[str, float]:
    """PyOD's AutoEncoder and KNN, library defaults, on raw pixels: AUROC and fit seconds of each."""
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.knn import KNN

    train, flat = x[:PYOD_TRAIN].flatten(1).numpy(), test.flatten(1).numpy()
    result = {}
    for name, detector in (("pyod_ae", AutoEncoder(verbose=0)), ("pyod_knn", KNN())):
        started = time.perf_counter()
        detector.fit(train)
        result[f"{name}_s"] = time.perf_counter() - started
        result[name] = auroc(detector.decision_function(flat), anomalous)
    return result


def run_ae(*args: object) -> tuple[float, str, float]:
    """`ae ARGS` in a new process: wall seconds, its stderr (the evaluation line lands there) and
    its CPU seconds (user + system: wall times are noisy on a shared machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "aecli", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"ae {' '.join(map(str, args))} failed ({done.returncode}):\n{done.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.perf_counter() - started, done.stderr, cpu


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
    parser.add_argument("--variants", default="ae,geometric", help="`ae train --variant` values, comma-separated")
    parser.add_argument("--epochs", type=int, help="override every side's epochs (quick checks)")
    parser.add_argument("--ae-flags", default="", help="extra `ae train` flags, e.g. '--latent-dim 16'")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed baseline (flag sweeps)")
    parser.add_argument("--no-peers", action="store_true", help="skip PyOD's AutoEncoder and KNN")
    parser.add_argument("--workdir", type=Path, help="keep model files here (default: a temporary folder)")
    args = parser.parse_args()
    classes = [int(c) for c in args.classes.split(",")]
    variants = args.variants.split(",")
    extra = shlex.split(args.ae_flags) + (["--epochs", str(args.epochs)] if args.epochs else [])
    train_x, train_y = fashion_mnist("train")
    test_x, test_y = fashion_mnist("test")
    peers = not args.no_peers
    if peers and importlib.util.find_spec("pyod") is None:
        print("PyOD is not installed (pip install -e .[bench]): its columns are skipped", file=sys.stderr)
        peers = False
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for k in classes:
            anomalous = test_y != k
            normal_x = train_x[torch.from_numpy(train_y == k)]
            row: dict = {"class": k, "seed": np.nan, "seed_s": np.nan}
            if not args.no_seed:
                row["seed"], row["seed_s"] = seed_auroc(normal_x, test_x, anomalous, args.epochs or 10)
            if peers:
                row.update(pyod_aurocs(normal_x, test_x, anomalous))
            for variant in variants:
                model = work / f"{variant}-{k}.safetensors"
                train_args = ("train", f"fashion-mnist:class={k}", "--variant", variant, "-o", model, "-q", *extra)
                row[f"{variant}:train_s"], _, row[f"{variant}:train_cpu_s"] = run_ae(*train_args)
                loaded = load_model(model, "cpu")
                scores = score(loaded, open_inputs(["fashion-mnist:test"]))
                row.update({f"{variant}:{m}": auroc(v, anomalous[scores.index]) for m, v in scores.values.items()})
                default = loaded.capabilities.default_metric or DEFAULT_METRIC
                cli, row[f"{variant}:flagged"] = cli_check(model, k, work / f"scores-{variant}-{k}.jsonl")
                row[f"{variant}:default"] = row[f"{variant}:{default}"]
                if abs(cli - row[f"{variant}:default"]) > 1e-9:
                    print(f"class {k}: CLI AUROC {cli:.6f} != library {row[f'{variant}:default']:.6f} ({variant}, {default})")
            rows.append(row)
            print(f"class {k} done: {json.dumps({c: round(v, 4) for c, v in row.items()})}", file=sys.stderr, flush=True)
    print_table(rows, variants)


def print_table(rows: list[dict], variants: list[str]) -> None:
    """A markdown table, one row per class and one of means, best mean AUROC in bold; then each
    variant's every metric (means), and the times."""
    peers = [c for c in ("pyod_ae", "pyod_knn") if c in rows[0]]
    defaults = {v: objective_class(v).default_metric or DEFAULT_METRIC for v in variants}
    columns = ["seed"] * (not np.isnan(rows[0]["seed"])) + [*peers, *(f"{v}:default" for v in variants)]
    names = {"seed": "seed (MSE)", "pyod_ae": "PyOD AutoEncoder", "pyod_knn": "PyOD KNN"}
    names.update({f"{v}:default": f"{v} ({defaults[v]})" for v in variants})
    times = [f"{c}_s" for c in columns[: len(columns) - len(variants)]] + [f"{v}:train_s" for v in variants]
    times += [f"{v}:train_cpu_s" for v in variants]
    flagged = [f"{v}:flagged" for v in variants]
    keys = [*columns, *times, *flagged]
    means = {c: float(np.mean([r[c] for r in rows])) for c in keys}
    best = max(columns, key=lambda c: -np.inf if np.isnan(means[c]) else means[c])
    head = ["class", *(names[c] for c in columns), *(f"{v} flagged" for v in variants)]
    print("| " + " | ".join(head) + " |")
    print("| --- " + "| ---: " * (len(head) - 1) + "|")
    for r in [*rows, {"class": "mean", **means}]:
        name = f"{r['class']} {NAMES[r['class']]}" if r["class"] != "mean" else "**mean**"
        cells = [f"**{r[c]:.4f}**" if r["class"] == "mean" and c == best else f"{r[c]:.4f}" for c in columns]
        cells += [f"{r[c]:.2%}" for c in flagged]
        print("| " + " | ".join([name, *cells]) + " |")
    print("\nmean seconds per class: " + ", ".join(f"{c} {means[c]:.1f}" for c in times))
    for v in variants:
        metrics = [m for m in METRICS if f"{v}:{m}" in rows[0]]
        print(f"{v}, mean AUROC by metric: " + ", ".join(f"{m} {np.mean([r[f'{v}:{m}'] for r in rows]):.4f}" for m in metrics))


if __name__ == "__main__":
    main()

"""Build aecli/sample_data/fashion-mnist-sample.npz, the small real dataset shipped in the package.

200 training and 50 test images per class, drawn with a fixed seed from the real Fashion-MNIST
(Zalando Research, MIT licence), so `ae train sample` and `make demo` work with no data at hand.

    apt-get install -y dataset-fashion-mnist
    python scripts/build_sample.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aecli.data.arrays import read_idx_array  # noqa: E402
from aecli.data.named import SAMPLE_FILE, fashion_mnist_dirs  # noqa: E402

PER_CLASS = {"train": 200, "test": 50}
FILES = {"train": "train", "test": "t10k"}


def pick(images: np.ndarray, labels: np.ndarray, per_class: int, rng: np.random.Generator):
    rows = np.concatenate([rng.choice(np.flatnonzero(labels == k), per_class, replace=False) for k in range(10)])
    rows = rng.permutation(rows)  # classes interleaved, as in the full set
    return np.ascontiguousarray(images[rows]), labels[rows].astype(np.uint8)


def main() -> None:
    source = next(d for d in fashion_mnist_dirs() if (d / "train-images-idx3-ubyte.gz").is_file())
    rng = np.random.default_rng(2026)
    arrays = {}
    for split, prefix in FILES.items():
        images = read_idx_array(source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx_array(source / f"{prefix}-labels-idx1-ubyte.gz")
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = pick(images, labels, PER_CLASS[split], rng)
    out = ROOT / "aecli" / "sample_data" / SAMPLE_FILE
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) from {source}")


if __name__ == "__main__":
    main()

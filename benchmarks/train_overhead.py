"""What `ae train` costs beyond the training itself: one epoch on Fashion-MNIST (60k images).

The baseline is a bare PyTorch loop doing the same work with the same model class on tensors
already in memory: Adam steps over the same 54k training images in batches of 128, then one
forward pass over the 6k held out. `ae train` adds process start-up, reading the IDX file,
streaming batches through a DataLoader, calibration statistics and an atomic save.

    python benchmarks/train_overhead.py [--repeats 2]

Prints both times and their ratio (target: <= 1.10), best of the repeats for each side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _common import ae, fashion_mnist
from aecli.config import ModelConfig, load_settings
from aecli.data import open_inputs
from aecli.models import create_model
from aecli.train import fit


def bare_epoch(x: torch.Tensor, batch_size: int = 128, val_split: float = 0.1) -> float:
    torch.manual_seed(0)
    model = create_model(ModelConfig(variant="ae", arch="conv").resolved(1, 28))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(x))
    n_val = int(len(x) * val_split)
    train, val = order[n_val:], order[:n_val]
    started = time.perf_counter()
    model.train()
    for i in range(0, len(train), batch_size):
        batch = x[train[i : i + batch_size]]
        loss = torch.nn.functional.mse_loss(model(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for i in range(0, len(val), batch_size):
            model(x[val[i : i + batch_size]])
    return time.perf_counter() - started


def library_fit(out: Path) -> float:
    """aecli.train.fit called in-process: the command minus start-up and argument parsing."""
    settings = load_settings(None, {"variant": "ae", "arch": "conv", "epochs": 1})
    started = time.perf_counter()
    fit(open_inputs(["fashion-mnist"]), settings, out)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    x, _ = fashion_mnist("train")
    bare, command, inside = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ae.safetensors"
        for _ in range(args.repeats):  # alternate, so drift on a noisy machine hits both sides
            bare.append(bare_epoch(x))
            command.append(ae("train", "fashion-mnist", "--variant", "ae", "--arch", "conv", "--epochs", "1", "-q", "-o", out))
            inside.append(library_fit(out))
    print(f"threads per process: {torch.get_num_threads()}")
    print(f"bare PyTorch loop, tensors in memory : {min(bare):7.2f} s")
    print(f"ae train, whole command             : {min(command):7.2f} s   ratio {min(command) / min(bare):.3f}")
    print(f"ae train, its training loop only    : {min(inside):7.2f} s   ratio {min(inside) / min(bare):.3f}")


if __name__ == "__main__":
    main()

"""What a one-shot `ae` command costs beyond `import torch`: one small PNG through score, encode, denoise.

In cron jobs, CI steps and shell loops a process starts, handles a few images and exits, so
start-up is the whole cost. Each command runs as a new process, interleaved with the baselines,
and the median of the rounds is compared with `python -c "import torch"` measured in the same run.

    python benchmarks/startup.py [--rounds 5]

Targets: each command <= 1.30x the torch import; `ae info` (no torch at all) <= 0.30 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

TARGET = 1.30
INFO_TARGET_S = 0.30


def seconds(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ae = [sys.executable, "-m", "aecli"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save(work / "one.png")
        subprocess.run([*ae, "train", "sample", "--epochs", "1", "-q", "-o", "m.safetensors"], cwd=work, check=True)
        cases = {
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
            'python -c "import torchvision"': [sys.executable, "-c", "import torchvision"],
            "ae score one.png": [*ae, "score", "one.png", "-m", "m.safetensors", "-q"],
            "ae encode one.png": [*ae, "encode", "one.png", "-m", "m.safetensors", "-o", "z.npy", "-q"],
            "ae denoise one.png": [*ae, "denoise", "one.png", "-m", "m.safetensors", "-o", "out", "-q"],
            "ae info m.safetensors": [*ae, "info", "m.safetensors"],
            'python -c "pass"': [sys.executable, "-c", "pass"],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):  # interleaved, so drift on a noisy machine hits every case alike
            for name, command in cases.items():
                times[name].append(seconds(command, work))
    base = statistics.median(times['python -c "import torch"'])
    print(f"median of {args.rounds} rounds, each a new process")
    for name, values in times.items():
        median = statistics.median(values)
        target = f"  (target <= {TARGET:.2f})" if name.startswith(("ae score", "ae encode", "ae denoise")) else ""
        target = f"  (target <= {INFO_TARGET_S:.2f} s)" if name.startswith("ae info") else target
        print(f"  {name:32s} {median:6.2f} s   x{median / base:.2f} the torch import{target}")


if __name__ == "__main__":
    main()

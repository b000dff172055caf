#!/usr/bin/env python3
"""Score images for anomalies with onnxruntime and numpy alone: what `ae score --format csv` prints.

    ae export -m model.safetensors -o model.onnx           # once, where aecli is installed
    python examples/onnx-score.py FOLDER model.score.onnx > scores.csv

Needs onnxruntime, numpy and Pillow (to decode PNG, JPEG, ...): no aecli, no torch. Inputs are
image files or folders (recursive, sorted, hidden entries skipped, as ae reads them). It prints
path, score, threshold, anomalous for each image in input order, with the threshold that the
graph's metadata holds (the model's calibration at the false-positive rate chosen at export).

The graph does the preprocessing: scaling, alpha, grey or colour, and fitting each image to the
model's square as the model was trained. All this script does is decode each file to uint8
pixels (H, W, C) and batch images of one size together. What differs from `ae score`:
  - 16-bit images are refused: ae reads them at full depth, the graph takes 8-bit pixels;
  - JPEG, GIF and WebP are decoded by Pillow, where ae uses torchvision (libjpeg-turbo for JPEG
    in both): pixels can differ by a level. PNG, BMP and TIFF are decoded by Pillow in both;
  - a model trained on patches (metadata `ae_score_default` = tiles) is scored on whole images,
    as `ae score --whole` does; ae scores it in tiles by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np
import onnxruntime
from PIL import Image

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_files(inputs: list[str]) -> list[Path]:
    """Files as named; folders walked as ae walks them: each folder's files sorted, then its subfolders."""
    found = []
    for spec in inputs:
        root = Path(spec).expanduser()
        if root.is_file():
            found.append(root)
            continue
        for directory, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            names = [f for f in sorted(files) if not f.startswith(".") and Path(f).suffix.lower() in SUFFIXES]
            found += [Path(directory) / name for name in names]
    return found


def read(path: Path) -> np.ndarray:
    """(H, W, C) uint8 with C of 1 to 4, converted as ae converts Pillow's other modes."""
    with Image.open(path) as image:
        if image.mode.startswith("I") or image.mode == "F":
            sys.exit(f"Error: {path}: a 16- or 32-bit image; the exported graph takes 8-bit pixels (use ae score)")
        if image.mode not in ("L", "LA", "RGB", "RGBA"):  # palettes, CMYK, 1-bit: as aecli's reader does
            image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
        pixels = np.asarray(image)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def batches(paths: list[Path], size: int):
    """(positions, uint8 batch) of consecutive images of one shape, at most `size` at a time."""
    positions, pixels = [], []
    for i, path in enumerate(paths):
        image = read(path)
        if pixels and (image.shape != pixels[0].shape or len(pixels) == size):
            yield positions, np.stack(pixels)
            positions, pixels = [], []
        positions.append(i)
        pixels.append(image)
    if pixels:
        yield positions, np.stack(pixels)


def field(value) -> str:
    """A CSV field as ae writes it: floats to 7 significant digits, true/false, quoted text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.7g}"
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("graph", help="MODEL.score.onnx, from ae export")
    parser.add_argument("--metric", help="another of the graph's metrics (default: the metadata's default_metric)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    session = onnxruntime.InferenceSession(args.graph, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("aecli_function") != "score":
        sys.exit(f"Error: {args.graph} is not a score graph from ae export (see its aecli_function metadata)")
    metric = args.metric or meta["default_metric"]
    if metric not in json.loads(meta["metrics"]):
        sys.exit(f"Error: {args.graph} has no metric {metric} (it has {', '.join(json.loads(meta['metrics']))})")
    if meta["ae_score_default"] == "tiles":
        print("Warning: this model was trained on patches: scoring whole images (ae score --whole)", file=sys.stderr)

    paths = image_files(args.inputs)
    scores = np.zeros(len(paths), np.float32)
    for positions, pixels in batches(paths, args.batch_size):
        (scores[positions],) = session.run([metric], {"pixels": pixels})

    threshold = json.loads(meta["thresholds"]).get(metric)
    if threshold is None:  # no calibration in the model file: median + k MAD of these scores, as ae does
        fpr, values = float(meta["fpr"]), scores.astype(np.float64)
        median = float(np.median(values))
        threshold = median + NormalDist().inv_cdf(1 - fpr) * 1.4826 * float(np.median(np.abs(values - median)))
    flagged = scores > threshold  # float32 scores against the threshold, compared as ae compares them

    print("path,score,threshold,anomalous")
    for path, score, anomalous in zip(paths, scores.tolist(), flagged.tolist()):
        print(",".join(field(v) for v in (str(path), score, float(threshold), anomalous)))


if __name__ == "__main__":
    main()

"""Small local defects on textures, found and located: `--variant draem` against a plain `ae` and a
classical patch-statistics baseline, all measured in the same run.

Textures: scikit-image's brick, grass and gravel photographs (512x512 grey). The top half gives
the training images (64x64 tiles, stride 32), the bottom half the test images (64x64 tiles), laid
out as MVTec AD lays out its own (test/good, test/<defect>, ground_truth/<defect>/*_mask.png).
Half the test tiles get one defect of a kind draem's training never pasted (it pastes Perlin-noise
shaped patches of jittered foreign texture):

  scratch  a thin straight line, 1-2 px wide and 12-28 px long, of one flat colour (white or black)
  blob     a blurred dark spot (a Gaussian of sigma 2-4 px, taking up to half the brightness)
  hole     a disc of radius 3-6 px where the texture is missing: flat, at the tile's mean
  stain    an ellipse, soft-edged, brightened by 30 % of the range, the texture kept under it

Rows, per texture and their mean: image AUROC (each tile's score) and pixel AUROC, and PRO
(scoring/pixel_metrics.py), for
  ae       `ae train good` with default settings; map |x - recon|, score its default metric
  draem    `ae train good --variant draem --patch-size 32` (settings below); scored in 32 px tiles
  patches  nearest-neighbour distance of each 8x8 patch's (mean, std), stride 4, to those of the
           training tiles (standardised); image score the highest, pixel map upsampled

    python benchmarks/defects.py [--textures brick,grass,gravel] [--epochs 20] [--work DIR]

Target: draem image AUROC >= 0.98 and pixel AUROC >= 0.95, clearly above the classical baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import workdir
from PIL import Image

from aecli.scoring.metrics import auroc
from aecli.scoring.pixel_metrics import pixel_auroc, pro_score, regions

TEXTURES = ("brick", "grass", "gravel")  # each draws its defects with its own seed: its place here
TILE, STRIDE = 64, 32
KINDS = ("scratch", "blob", "hole", "stain")
DRAEM = ["--variant", "draem", "--patch-size", "32", "--patches-per-image", "4", "--batch-size", "32"]


def tiles(image: np.ndarray, stride: int) -> np.ndarray:
    h, w = image.shape
    return np.stack([image[y : y + TILE, x : x + TILE] for y in range(0, h - TILE + 1, stride)
                     for x in range(0, w - TILE + 1, stride)])  # fmt: skip


def disc(shape, cy, cx, ry, rx, soft: float = 0.0) -> np.ndarray:
    """An ellipse's weight per pixel: 1 inside, 0 outside, with a soft edge of `soft` radii."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot((yy - cy) / ry, (xx - cx) / rx)
    return np.clip((1 + soft - r) / soft, 0, 1) if soft else (r <= 1).astype(float)


def defect(tile: np.ndarray, kind: str, rng) -> tuple[np.ndarray, np.ndarray]:
    """The tile (floats in [0, 1]) with one defect of `kind` near its middle, and its mask."""
    x, n = tile.copy(), TILE
    cy, cx = rng.uniform(16, n - 16, 2)
    if kind == "scratch":
        angle, length = rng.uniform(0, np.pi), rng.uniform(12, 28)
        t = np.linspace(-length / 2, length / 2, 200)
        mask = np.zeros_like(x, bool)
        for w in range(int(rng.integers(1, 3))):
            ys = np.clip((cy + t * np.sin(angle) + w * np.cos(angle)).round().astype(int), 0, n - 1)
            xs = np.clip((cx + t * np.cos(angle) - w * np.sin(angle)).round().astype(int), 0, n - 1)
            mask[ys, xs] = True
        x[mask] = float(rng.integers(0, 2))
        return x, mask
    if kind == "blob":
        sigma = rng.uniform(2, 4)
        yy, xx = np.mgrid[:n, :n]
        weight = 0.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        return x * (1 - weight), weight > 0.1
    if kind == "hole":
        r = rng.uniform(3, 6)
        mask = disc(x.shape, cy, cx, r, r) > 0
        x[mask] = tile.mean()
        return x, mask
    weight = disc(x.shape, cy, cx, rng.uniform(4, 8), rng.uniform(6, 12), soft=0.4)
    return np.clip(x + 0.3 * weight, 0, 1), weight > 0.5


def make_set(work: Path, name: str, seed: int) -> tuple[Path, Path]:
    """good/ (training tiles) and test/ with ground_truth/, MVTec-style, for one texture."""
    import skimage.data

    photo = getattr(skimage.data, name)().astype(np.float64) / 255
    root = work / name
    save_all(root / "good", tiles(photo[:256], STRIDE))
    test = tiles(photo[256:], TILE)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(test))
    good, bad = order[: len(test) // 2], order[len(test) // 2 :]
    save_all(root / "test" / "good", test[good])
    for k, kind in enumerate(KINDS):
        made = [defect(test[i], kind, rng) for i in bad[k::len(KINDS)]]
        save_all(root / "test" / kind, [x for x, _ in made])
        save_all(root / "ground_truth" / kind, [m.astype(float) for _, m in made], suffix="_mask")
    return root / "good", root / "test"


def save_all(folder: Path, images, suffix: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray((np.asarray(image) * 255).round().astype(np.uint8)).save(folder / f"{i:03d}{suffix}.png")


def ae(*args) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "aecli", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"ae {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done


def measured(test: Path, model: Path) -> dict[str, float]:
    """Image AUROC, pixel AUROC and PRO as `ae score --labels folders` reports them."""
    err = ae("score", test, "-m", model, "--labels", "folders", "--format", "json").stderr
    line = next(s for s in err.splitlines() if s.startswith("labels:"))
    pixels = next(s for s in err.splitlines() if s.startswith("masks:"))
    return {
        "image AUROC": float(line.split("AUROC ")[1].split(",")[0]),
        "pixel AUROC": float(pixels.split("pixel AUROC ")[1].split(",")[0]),
        "PRO": float(pixels.split("PRO (to 30% FPR) ")[1]),
    }


def read_folder(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p), np.float64) / 255 for p in sorted(folder.glob("*.png"))])


def patch_features(images: np.ndarray) -> torch.Tensor:
    """(N, 2, h, w): each 8x8 patch's mean and std, stride 4."""
    x = torch.as_tensor(images, dtype=torch.float32)[:, None]
    mean = F.avg_pool2d(x, 8, 4)
    std = (F.avg_pool2d(x * x, 8, 4) - mean**2).clamp(min=0).sqrt()
    return torch.cat([mean, std], 1)


def classical(good: Path, test: Path) -> dict[str, float]:
    """The patch-statistics baseline: nearest-neighbour distance of each patch's (mean, std)."""
    train = patch_features(read_folder(good)).permute(0, 2, 3, 1).reshape(-1, 2)
    centre, scale = train.mean(0), train.std(0)
    train = (train - centre) / scale
    scores, labels, maps, ids, offset = [], [], [], [], 0
    for folder in sorted(p for p in test.iterdir() if p.is_dir()):
        images = read_folder(folder)
        feats = (patch_features(images).permute(0, 2, 3, 1) - centre) / scale
        distance = torch.cat([torch.cdist(f.reshape(-1, 2), train).min(1).values for f in feats])
        distance = distance.reshape(feats.shape[:3])
        heat = F.interpolate(distance[:, None], size=(TILE, TILE), mode="bilinear", align_corners=False)[:, 0]
        scores += distance.flatten(1).max(1).values.tolist()
        labels += [int(folder.name != "good")] * len(images)
        masks = [np.zeros((TILE, TILE), bool)] * len(images)
        if folder.name != "good":
            masks = [m > 0.5 for m in read_folder(test.parent / "ground_truth" / folder.name)]
        for h, m in zip(heat.numpy(), masks):
            found = regions(m)
            maps.append(h.ravel())
            ids.append(np.where(found > 0, found + offset, 0).ravel())
            offset += int(found.max())
    values, region_ids = np.concatenate(maps), np.concatenate(ids)
    return {
        "image AUROC": auroc(np.array(scores), np.array(labels)),
        "pixel AUROC": pixel_auroc(values, region_ids > 0),
        "PRO": pro_score(values, region_ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--textures", default=",".join(TEXTURES))
    parser.add_argument("--epochs", type=int, default=20, help="draem's epochs")
    parser.add_argument("--work", type=Path, help="keep the images and models here")
    args = parser.parse_args()
    rows: dict[str, dict[str, dict[str, float]]] = {"ae": {}, "draem": {}, "patches": {}}
    with workdir(args.work, "defects-") as work:
        for name in args.textures.split(","):
            seed = TEXTURES.index(name) if name in TEXTURES else len(TEXTURES) + sum(map(ord, name))
            good, test = make_set(work, name, seed)  # the same tiles and defects in a run of any subset
            started = time.perf_counter()
            ae("train", good, "-o", work / f"{name}-ae.safetensors", "-q")
            rows["ae"][name] = measured(test, work / f"{name}-ae.safetensors")
            middle = time.perf_counter()
            ae("train", good, *DRAEM, "--epochs", args.epochs, "-o", work / f"{name}-draem.safetensors", "-q")
            rows["draem"][name] = measured(test, work / f"{name}-draem.safetensors")
            rows["patches"][name] = classical(good, test)
            print(f"{name}: ae {middle - started:.0f} s, draem {time.perf_counter() - middle:.0f} s "
                  f"(train and score)", file=sys.stderr)  # fmt: skip
            print(json.dumps({k: v[name] for k, v in rows.items()}), file=sys.stderr)
    names = args.textures.split(",")
    print(f"| method | {' | '.join(f'{n} image / pixel AUROC / PRO' for n in names)} | mean image / pixel AUROC |")
    print("|" + " --- |" * (len(names) + 2))
    for method, by_name in rows.items():
        cells = [f"{by_name[n]['image AUROC']:.3f} / {by_name[n]['pixel AUROC']:.3f} / {by_name[n]['PRO']:.3f}"
                 for n in names]  # fmt: skip
        mean_image = np.mean([by_name[n]["image AUROC"] for n in names])
        mean_pixel = np.mean([by_name[n]["pixel AUROC"] for n in names])
        print(f"| {method} | {' | '.join(cells)} | {mean_image:.3f} / {mean_pixel:.3f} |")


if __name__ == "__main__":
    main()

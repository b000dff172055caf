"""Named datasets: `sample` (shipped in the package) and `fashion-mnist` (a local copy, never downloaded).

A name takes optional parts after colons: a split (`train`, the default, or `test`) and a class
filter, e.g. `fashion-mnist:test`, `sample:class=0` or `sample:test:class=1,7`.

Gzipped IDX files are decoded once into an uncompressed .npy in the user's cache (`cache_dir()`),
named after the source's path, size and modification time, so a changed source is decoded again.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

import numpy as np

from aecli.data.arrays import ArrayImages, read_idx_array
from aecli.errors import AecliError, InputError
from aecli.io.files import atomic_output

NAMES = ("sample", "fashion-mnist")
SAMPLE_FILE = "fashion-mnist-sample.npz"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def is_named(spec: str) -> bool:
    return spec.split(":", 1)[0] in NAMES


# Both named datasets are Fashion-MNIST: its ten classes, in label order (plots name them).
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def class_names(spec: str) -> tuple[str, ...] | None:
    """The names of a named dataset's classes, indexed by label; None for any other input."""
    return CLASS_NAMES if is_named(spec) else None


def open_named(spec: str) -> ArrayImages:
    name, *parts = spec.split(":")
    split, classes = "train", None
    for part in parts:
        if part in ("train", "test"):
            split = part
        elif part.startswith("class="):
            try:
                classes = [int(c) for c in part[len("class=") :].split(",")]
            except ValueError:
                raise InputError(f"{spec}: class= takes class numbers 0-9, e.g. class=0 or class=1,7") from None
        else:
            raise InputError(f"{spec}: unknown part '{part}' (use :train, :test or :class=K)")
    images, labels = _load_sample(split) if name == "sample" else _load_fashion_mnist(split)
    if classes is not None:
        keep = np.isin(labels, classes)
        if not keep.any():
            raise InputError(f"{spec}: no images of class {','.join(map(str, classes))} (classes are 0-9)")
        images, labels = images[keep], labels[keep]
    return ArrayImages(spec, images, True, labels)


def _load_sample(split: str) -> tuple[np.ndarray, np.ndarray]:
    """2,500 Fashion-MNIST images (250 per class) shipped with aecli; MIT licence, see LICENSES."""
    with resources.files("aecli.sample_data").joinpath(SAMPLE_FILE).open("rb") as f:
        with np.load(f, allow_pickle=False) as archive:
            return archive[f"{split}_images"], archive[f"{split}_labels"]


def fashion_mnist_dirs() -> list[Path]:
    """Where local copies are looked for, in order."""
    dirs = []
    if os.environ.get("AE_DATA_DIR"):
        root = Path(os.environ["AE_DATA_DIR"]).expanduser()
        dirs += [root / "fashion-mnist", root / "FashionMNIST" / "raw", root]
    dirs.append(Path("/usr/share/datasets/fashion-mnist"))
    cache = Path.home() / ".cache"
    dirs += [cache / "FashionMNIST" / "raw", cache / "torchvision" / "FashionMNIST" / "raw"]
    return dirs


def _either(path: Path) -> Path | None:
    """The IDX file as it was unpacked, or still gzipped, as torchvision and Debian keep it."""
    return next((p for p in (path, path.with_name(path.name + ".gz")) if p.is_file()), None)


def _load_fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = _FILES[split]
    for directory in fashion_mnist_dirs():
        images, labels = _either(directory / images_name), _either(directory / labels_name)
        if images and labels:
            return _read_idx(images), _read_idx(labels)
    looked = ", ".join(str(d) for d in fashion_mnist_dirs())
    raise InputError(
        f"fashion-mnist ({split}) not found; looked in {looked}. It is never downloaded at run time: "
        "install it (apt-get install dataset-fashion-mnist) or put its IDX files in $AE_DATA_DIR/fashion-mnist"
    )


def cache_dir() -> Path:
    """Where decoded copies of gzipped datasets are kept: $AE_CACHE_DIR, else the XDG cache directory."""
    if os.environ.get("AE_CACHE_DIR"):
        return Path(os.environ["AE_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "aecli"
    return Path.home() / ".cache" / "aecli"


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file's array. A gzipped one is decoded once (0.2 s for the training images) into a
    memory-mapped .npy in the cache; a plain one is memory-mapped already, as fast as an .npy."""
    if path.suffix != ".gz":
        return read_idx_array(path)
    try:
        source = path.stat()
        folder = cache_dir() / "fashion-mnist"
    except (OSError, RuntimeError):  # no home directory to hold a cache: decode, as without one
        return read_idx_array(path)
    # The name records what the copy was made from (path, size, time): a source that moves or
    # changes misses it. A name only ever holds the same bytes, so concurrent writers agree.
    name = path.name.removesuffix(".gz")
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    cached = folder / f"{name}-{where}-{source.st_size}-{source.st_mtime_ns}.npy"
    try:
        return np.load(cached, mmap_mode="r", allow_pickle=False)
    except Exception:  # absent, or damaged (numpy's parser raises many kinds): decode it again
        pass
    array = read_idx_array(path)
    _store(array, cached, others=f"{name}-*.npy")
    return array


def _store(array: np.ndarray, cached: Path, others: str) -> None:
    """Write the cached copy and remove the file's other copies (earlier states, other places), so
    the cache holds one per file name. A cache that cannot be written (read-only, full) costs only
    the decoding time again, so every failure here is silent."""
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(cached) as f:
            np.save(f, array, allow_pickle=False)
        for old in cached.parent.glob(others):
            if old != cached:
                old.unlink(missing_ok=True)
    except (OSError, AecliError):
        pass

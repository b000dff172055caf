"""What a command's INPUTS resolve to: an indexable set of images that holds paths, not pixels.

Any mix of image files, directories (recursive, sorted, hidden entries skipped), glob patterns,
.npy/.npz arrays, IDX files, named datasets and `--files-from` lists becomes one `ImageSet`
whose images keep the order they were given in. Pixels are read only when a batch asks for them.
"""

from __future__ import annotations

import bisect
import glob
import itertools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aecli import ranks
from aecli.data.arrays import ArrayImages, is_idx, read_idx, read_npy, read_npz
from aecli.data.images import IMAGE_SUFFIXES, MAX_PIXELS, UnreadableImage, read_image, to_channels, to_size
from aecli.data.named import is_named, open_named
from aecli.errors import InputError, UsageError
from aecli.io.files import real

_GLOB_CHARS = set("*?[")


@dataclass
class FileImages:
    """Image files, decoded one by one when a batch needs them.

    `relative` is where each file sits below the directory it was found in (its bare name when
    it was named directly): what outputs mirror, e.g. `ae denoise DIR -o OUT`.
    """

    paths: list[Path]
    relative: list[Path]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Batch:
    """Pixels (B, C, S, S) of the images that loaded, their indices, and what was skipped.

    Loaded at their own size (size=None), pixels is a list of (C, H, W) tensors instead.
    """

    pixels: torch.Tensor | list[torch.Tensor]
    index: torch.Tensor
    skipped: list[str] = field(default_factory=list)
    error: str | None = None  # fatal; travels as data so worker processes report it in one line
    rows: torch.Tensor | None = None  # the index on the pixels' device, where they are held there (resident.py)

    def pin_memory(self) -> Batch:  # called by DataLoader(pin_memory=True) on CUDA
        if isinstance(self.pixels, list):
            return self
        return Batch(self.pixels.pin_memory(), self.index, self.skipped, self.error)


@dataclass
class ImageSet:
    parts: list[FileImages | ArrayImages]
    description: str
    non_images: int = 0  # files in directories that were not images, skipped
    directories: list[Path] = field(default_factory=list)  # input directories: outputs never go inside
    max_pixels: int = MAX_PIXELS  # larger images are refused from their header, before decoding
    refused: list[str] = field(default_factory=list)  # array files that could not be opened (skip_bad)

    def __post_init__(self) -> None:
        self._starts = [0]
        for part in self.parts:
            self._starts.append(self._starts[-1] + len(part))

    def __len__(self) -> int:
        return self._starts[-1]

    def _part_of(self, i: int) -> int:
        return bisect.bisect_right(self._starts, i) - 1

    def _locate(self, i: int) -> tuple[FileImages | ArrayImages, int]:
        k = self._part_of(i)
        return self.parts[k], i - self._starts[k]

    def name(self, i: int) -> str:
        """A file path, or `array#row` for a row of an array."""
        part, row = self._locate(i)
        return str(part.paths[row]) if isinstance(part, FileImages) else f"{part.name}#{row}"

    def relative(self, i: int) -> Path:
        """Where image i's outputs go below an output directory: `sub/x.png`, or `array/000012.png`."""
        part, row = self._locate(i)
        if isinstance(part, FileImages):
            return part.relative[row]
        stem = Path(part.name.split(":")[0]).name.split(".")[0] or "images"
        return Path(stem) / f"{row:06d}.png"

    def path(self, i: int) -> Path | None:
        """The file image i is read from; None for a row of an array."""
        part, row = self._locate(i)
        return part.paths[row] if isinstance(part, FileImages) else None

    def mirrored(self) -> tuple[list[Path], list[str]]:
        """Each image's relative path (what outputs mirror) and its name: mirror_targets' arguments."""
        return [self.relative(i) for i in range(len(self))], [self.name(i) for i in range(len(self))]

    def files(self) -> Iterator[Path]:
        """Every file the images are read from (image files and array files): what no output may replace."""
        for part in self.parts:
            yield from part.paths if isinstance(part, FileImages) else filter(None, [part.file])

    def require_read(self, count: int) -> None:
        """With --skip-bad every image can be skipped: an error, never an empty result that looks done."""
        if count == 0:
            raise InputError(f"no readable images in {self.description}")

    def is_array(self, i: int) -> bool:
        return isinstance(self._locate(i)[0], ArrayImages)

    def label(self, i: int) -> int | None:
        part, row = self._locate(i)
        labels = getattr(part, "labels", None)
        return None if labels is None else int(labels[row])

    def first_shape(self, strict: bool = False) -> tuple[int, int, int]:
        """(C, H, W) of the first readable image: what a new model's channels and size default to."""
        for part in self.parts:
            if isinstance(part, ArrayImages):
                return part.shape
            for path in part.paths:
                try:
                    return tuple(read_image(path, self.max_pixels).shape)
                except UnreadableImage:
                    if strict:
                        raise
        raise InputError(f"no readable images in {self.description}")

    def load(
        self,
        indices: np.ndarray,
        channels: int | None,
        size: int | None,
        resize: str | None = "stretch",
        strict: bool = False,
    ) -> Batch:
        """Read the images at `indices` as one batch fitted to the model's channels and size.

        channels=None keeps each image's colour (alpha dropped); size=None keeps its size. resize:
        how another size is fitted (pad, crop or stretch: data.images.to_size); None: an error.
        """
        try:
            return self._load(indices, channels, size, resize, strict)
        except InputError as e:
            return Batch([], torch.empty(0, dtype=torch.long), error=str(e))

    def _load(
        self, indices: np.ndarray, channels: int | None, size: int | None, resize: str | None, strict: bool
    ) -> Batch:
        pieces, kept, skipped = [], [], []
        groups: dict[int, list[int]] = {}
        for i in indices.tolist():
            groups.setdefault(self._part_of(i), []).append(i)
        position = {i: n for n, i in enumerate(indices.tolist())}
        for k, members in groups.items():
            part, start = self.parts[k], self._starts[k]
            if isinstance(part, ArrayImages):
                x, usable = part.get(np.asarray(members) - start)
                if not usable.all():
                    bad = [m for m, ok in zip(members, usable) if not ok]
                    messages = [f"{part.name}#{m - start}: pixel values must be finite and in [0, 1]" for m in bad]
                    if strict:
                        raise UnreadableImage(messages[0])
                    skipped += messages
                    x, members = x[torch.from_numpy(usable)], [m for m, ok in zip(members, usable) if ok]
                x = self._fit(x, channels, size, resize, part.name)
                pieces += [x] if size else list(x)
                kept += members
                continue
            for i in members:
                try:
                    x = read_image(part.paths[i - start], self.max_pixels)
                except UnreadableImage as e:
                    if strict:
                        raise
                    skipped.append(str(e))
                    continue
                x = self._fit(x, channels, size, resize, part.paths[i - start])
                pieces.append(x[None] if size else x)
                kept.append(i)
        order = sorted(range(len(kept)), key=lambda n: position[kept[n]])
        index = torch.tensor(kept, dtype=torch.long)[order] if kept else torch.empty(0, dtype=torch.long)
        if not size:
            return Batch([pieces[n] for n in order], index, skipped)
        pixels = torch.cat(pieces) if pieces else torch.empty(0, channels or 1, size, size)
        if order != list(range(len(order))):  # a copy of the whole batch, only when the order changed
            pixels = pixels[torch.tensor(order, dtype=torch.long)]
        return Batch(pixels, index, skipped)

    @staticmethod
    def _fit(x: torch.Tensor, channels: int | None, size: int | None, resize: str | None, name: object) -> torch.Tensor:
        if size and resize is None and tuple(x.shape[-2:]) != (size, size):
            h, w = x.shape[-2:]
            raise InputError(f"{name}: image is {w}x{h}, the model takes {size}x{size} (drop --exact-size to resize)")
        c = x.shape[-3]
        x = to_channels(x, channels or (c - 1 if c in (2, 4) else c))
        return to_size(x, size, resize) if size else x


def open_inputs(
    specs: list[str], files_from: str | None = None, max_pixels: int | None = None, skip_bad: bool = False
) -> ImageSet:
    """Resolve INPUTS (and a --files-from list, `-` for stdin) into one ImageSet, in order.

    max_pixels (default MAX_PIXELS) bounds the images it will decode. With skip_bad, an array
    file that cannot be opened is left out and listed in `refused`, as unreadable images are
    skipped later; a missing path or an empty directory is always an error.
    """
    specs = list(specs)
    if files_from is not None:
        specs += _read_list(files_from)
    if not specs:
        raise UsageError("no inputs given (paths, directories, globs, .npy/.npz/IDX files or a dataset name)")
    parts: list[FileImages | ArrayImages] = []
    non_images, refused = 0, []
    for spec in specs:
        found, skipped = _resolve(spec, refused if skip_bad else None)
        non_images += skipped
        for part in found:  # adjacent files join one part: fewer parts, cheaper lookups
            if isinstance(part, FileImages) and parts and isinstance(parts[-1], FileImages):
                parts[-1].paths.extend(part.paths)
                parts[-1].relative.extend(part.relative)
            else:
                parts.append(part)
    description = specs[0] if len(specs) == 1 else f"{len(specs)} inputs ({specs[0]}, ...)"
    directories = [real(Path(s).expanduser()) for s in specs if Path(s).expanduser().is_dir()]
    images = ImageSet(parts, description, non_images, directories, max_pixels or MAX_PIXELS, refused)
    if not len(images):
        if refused:
            raise InputError(refused[0] if len(refused) == 1 else f"none of the {len(refused)} inputs can be read")
        extra = f" ({non_images} non-image files skipped)" if non_images else ""
        raise InputError(f"no images found in {description}{extra}")
    return images


def _read_list(source: str) -> list[str]:
    if source == "-" and ranks.active():  # torchrun's processes share one stdin: each would get a part
        raise UsageError("--files-from - cannot be shared by torchrun's processes; write the list to a file")
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as e:
        raise InputError(f"cannot read --files-from {source}: {e.strerror or e}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _resolve(spec: str, refused: list[str] | None) -> tuple[list[FileImages | ArrayImages], int]:
    path = Path(spec).expanduser()
    if path.is_dir():
        return _walk(path)
    if path.is_file():
        try:
            return [_open_file(path)], 0
        except InputError as e:
            if refused is None:
                raise
            refused.append(str(e))
            return [], 0
    if is_named(spec):
        return [open_named(spec)], 0
    if _GLOB_CHARS & set(spec):
        matches = sorted(glob.glob(os.path.expanduser(spec), recursive=True))
        if not matches:
            raise InputError(f"no files match '{spec}'")
        parts, skipped, base = [], 0, _glob_base(spec)
        for match in matches:
            found, n = _resolve(match, refused)
            below = Path(match).relative_to(base)  # what outputs mirror: a/x.png and b/x.png stay apart
            for part in found:
                if isinstance(part, FileImages):
                    part.relative = [below / r for r in part.relative] if Path(match).is_dir() else [below]
            parts += found
            skipped += n
        return parts, skipped
    if path.is_symlink():
        raise InputError(f"{spec}: broken symbolic link")
    raise InputError(f"{spec}: no such file, directory or dataset (datasets: sample, fashion-mnist)")


def _glob_base(spec: str) -> Path:
    """The folder a pattern's matches lie below: its leading parts without glob characters."""
    parts = Path(os.path.expanduser(spec)).parts[:-1]
    fixed = itertools.takewhile(lambda part: not _GLOB_CHARS & set(part), parts)
    return Path(*fixed)


def _open_file(path: Path) -> FileImages | ArrayImages:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return read_npy(path)
    if suffix == ".npz":
        return read_npz(path)
    if is_idx(path):
        return read_idx(path)
    return FileImages([path], [Path(path.name)])  # anything else is tried as an image, decoded by content


def _walk(root: Path) -> tuple[list[FileImages], int]:
    """Image files under a directory, recursively, sorted by path; hidden entries skipped."""
    found, skipped = [], 0
    for directory, dirs, files in os.walk(root):  # never follows directory links: no loops
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(Path(directory) / name)
            else:
                skipped += 1
    if not found:
        extra = f" ({skipped} non-image files skipped)" if skipped else ""
        raise InputError(f"{root}: no images found{extra}")
    return [FileImages(found, [p.relative_to(root) for p in found])], skipped

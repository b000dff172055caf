"""Each image's class, for a conditional model: its name, and its number among the model's classes.

The classes are read as `ae score --labels` reads labels (scoring/labels.py, with the readers
here), but keep their names:
folders    the first folder below an input directory: ./data/circle/1.png is a `circle`
class      a dataset's or .npz's own labels, named where the dataset names them (Fashion-MNIST's)
FILE.csv   rows of path,class; a path matches an input as given, as below its directory, or resolved
A new model's classes are the names found, sorted; a trained one's are stored in its file, and
an image of a class it does not know is an error naming the known ones.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aecli.errors import InputError, UsageError
from aecli.io.files import real


def class_labels(
    images, spec: str, classes: list[str] | tuple[str, ...] | None = None, flag: str = "--condition"
) -> tuple[list[str], np.ndarray]:
    """The class names (`classes`, or those found, sorted) and each image's number among them;
    `flag` names the option the spec came from, in errors."""
    names = class_names(images, spec, flag)
    known = list(classes) if classes else sorted(set(names))
    number = {name: k for k, name in enumerate(known)}
    unknown = sorted(set(names) - set(number))
    if unknown:
        raise UsageError(f"{flag} {spec}: class '{unknown[0]}' is not one of the model's ({', '.join(known)})")
    return known, np.array([number[name] for name in names], dtype=np.int64)


def class_names(images, spec: str, flag: str = "--condition") -> list[str]:
    """One class name per image of the set, or a one-line error."""
    if spec == "folders":
        return [top_folder(images, i, flag) for i in range(len(images))]
    if spec == "class":
        from aecli.data.named import class_names as dataset_names

        found = [images.label(i) for i in range(len(images))]
        if any(k is None for k in found):
            raise UsageError(f"{flag} class needs inputs with labels (a dataset, or an .npz with 'labels')")
        named = {dataset_names(p.name) for p in images.parts if getattr(p, "labels", None) is not None}
        names = named.pop() if len(named) == 1 else None
        return [names[k] if names and 0 <= k < len(names) else str(k) for k in found]
    if spec.lower().endswith(".csv") or Path(spec).is_file():
        return csv_values(images, Path(spec), flag)
    raise UsageError(f"unknown {flag} '{spec}' (use folders, class or a FILE.csv of path,class rows)")


def top_folder(images, i: int, flag: str) -> str:
    """The first folder below the input directory an image was found in: ./data/circle/1.png is `circle`.

    Class folders given one by one (`./data/circle ./data/square`, as the shell expands
    ./data/*) name their own images' class.
    """
    parts = images.relative(i).parts
    if images.is_array(i):
        raise UsageError(f"{flag} folders: {images.name(i)} is not inside a folder below an input directory")
    if len(parts) >= 2:
        return parts[0]
    folder = images.path(i).parent
    if len(images.directories) >= 2 and real(folder) in images.directories:
        return folder.name or real(folder).name
    raise UsageError(f"{flag} folders: {images.name(i)} is not inside a folder below an input directory")


def csv_values(
    images, path: Path, flag: str, column: str = "class", accepts: Callable[[str], bool] = bool, hint: str = ""
) -> list[str]:
    """Each image's value from a CSV of `path,value` rows (a `path` header and # comments allowed):
    a row's path matches an input as given, as below its directory, or resolved. A row whose value
    `accepts` refuses, or an image without a row, is a one-line error."""
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    except OSError as e:
        raise InputError(f"{flag} {path}: {e.strerror or e}") from None
    if rows and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    table = {}
    for n, row in enumerate(rows, 1):
        value = row[1].strip() if len(row) >= 2 else ""
        if not value or not accepts(value):
            raise InputError(f"{flag} {path}: row {n} is not `path,{column}`{hint}")
        table[row[0].strip()] = value
    resolved = {str(real(k)): v for k, v in table.items()}
    values = []
    for i in range(len(images)):
        name = images.name(i)
        found = table.get(name, table.get(str(images.relative(i)), resolved.get(str(real(name)))))
        if found is None:
            raise InputError(f"{flag} {path}: no {column} for {name}")
        values.append(found)
    return values

"""Known answers for evaluation: which scored images are normal (0) and which anomalous (1).

folders    the first folder below an input directory: `good` or `normal` is normal, any other
           anomalous (MVTec AD's layout: test/good, test/scratch, ...)
class=K,.. a dataset's or .npz's own labels: classes K are normal, the rest anomalous
FILE.csv   rows of path,label (label 0/1, or normal/good/ok vs anomaly/anomalous/defect/bad);
           a path matches an input as given, as below its directory, or resolved
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aecli.data.classes import csv_values, top_folder
from aecli.errors import UsageError

NORMAL_FOLDERS = {"good", "normal"}
_WORDS = {
    "0": 0,
    "normal": 0,
    "good": 0,
    "ok": 0,
    "false": 0,
    "1": 1,
    "anomaly": 1,
    "anomalous": 1,
    "defect": 1,
    "bad": 1,
    "true": 1,
}


def labels_for(images, spec: str) -> np.ndarray:
    """One label per image of the set (0 normal, 1 anomalous), or a one-line error."""
    if spec == "folders":
        return np.array([_from_folder(images, i) for i in range(len(images))], dtype=np.int8)
    if spec.startswith("class="):
        try:
            normal = {int(k) for k in spec[len("class=") :].split(",")}
        except ValueError:
            raise UsageError(f"--labels {spec}: class= takes class numbers, e.g. class=0 or class=1,7") from None
        found = [images.label(i) for i in range(len(images))]
        if any(k is None for k in found):
            raise UsageError(f"--labels {spec} needs inputs with labels (a dataset, or an .npz with 'labels')")
        return np.array([0 if k in normal else 1 for k in found], dtype=np.int8)
    return _from_csv(images, Path(spec))


def _from_folder(images, i: int) -> int:
    return 0 if top_folder(images, i, "--labels").lower() in NORMAL_FOLDERS else 1


def _from_csv(images, path: Path) -> np.ndarray:
    hint = " with a label such as 0/1 or normal/anomaly"
    values = csv_values(images, path, "--labels", "label", lambda v: v.lower() in _WORDS, hint)
    return np.array([_WORDS[v.lower()] for v in values], dtype=np.int8)

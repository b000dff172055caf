"""`ae export`: a model file as ONNX graphs that onnxruntime runs alone, without aecli or torch.

One file per function the model's capabilities allow, named after the output's base name:

  BASE.encode.onnx       pixels -> latent
  BASE.decode.onnx       latent -> image            (capabilities.decode: not a unet)
  BASE.denoise.onnx      pixels -> image            (capabilities.denoise; otherwise
   or BASE.reconstruct.onnx                          the model's reconstruction)
  BASE.score.onnx        pixels -> each metric, anomalous, map, reconstruction, fitted

Separate files rather than one file of several graphs, because onnxruntime runs one graph per
session: each file is one session with one input, and it computes only what it outputs.

Every graph that takes images starts from uint8 pixels, (N, H, W, C) channels last as PIL and
numpy decode them, with C of 1 to 4; scaling, alpha and channel conversion happen inside it, so
a deployer cannot get them wrong. `encode` and `score` also fit an image of any size to the
model's square as it was trained (its `resize`), as `ae encode` and `ae score` do; `denoise` runs
a fully convolutional model at the image's own size, as `ae denoise` does, and fits images to a
bottleneck model as `ae denoise --whole` does. The batch dimension is dynamic; one batch holds
images of one size. Tiling (`ae denoise` on larger images for bottleneck models, `ae score
--tiles`) stays outside the graphs.

The metadata (ONNX metadata_props, strings, JSON where structured) holds the model config and,
in the score file, the calibrated thresholds (docs/export.md lists the keys). Before anything is
written, each graph runs in onnxruntime and is compared with ae's own code (graphs.check).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aecli.errors import MissingExtra, OutputError, UsageError
from aecli.io.files import check_writable, real, write_bytes_atomic

INSTALL = "pip install 'aecli[onnx]'"


def check_available() -> None:
    """Fail before any work without the extra: onnx, onnxscript (torch's exporter needs it) and
    onnxruntime (every graph is checked in it before it is written)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise MissingExtra(f"ae export needs onnx, onnxscript and onnxruntime: {INSTALL}") from None


def functions(capabilities: Any) -> list[str]:
    """The functions a model with these capabilities exports, in the order they are written."""
    names = ["encode"]
    if capabilities.decode:
        names.append("decode")
    names.append("denoise" if capabilities.denoise else "reconstruct")
    return [*names, "score"]


def targets(model_path: Path, out: Path | None, names: list[str]) -> dict[str, Path]:
    """Each function's file: `-o m.onnx` gives m.encode.onnx, ... (default: the model file's name).

    Refused before any work: a path that cannot be written, the model file itself, or a file that
    ae export did not write (one it did write is replaced, atomically).
    """
    out = Path(out) if out is not None else Path(model_path).with_suffix(".onnx")
    if out.suffix != ".onnx" or not out.stem:
        raise UsageError(f"-o {out}: give the base name of the ONNX files, ending in .onnx (e.g. model.onnx)")
    base = out.with_suffix("")
    paths = {name: base.parent / f"{base.name}.{name}.onnx" for name in names}
    for path in paths.values():
        if real(path) == real(model_path):
            raise OutputError(f"refusing to overwrite the model file {model_path}")
        check_writable(path)
        if path.exists() and not _written_by_us(path):
            raise OutputError(f"refusing to overwrite {path}: it is not an ONNX file written by ae export")
    return paths


def _written_by_us(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # not protobuf, or not a model: someone else's file
        return False
    return any(p.key == "aecli_function" for p in model.metadata_props)


@dataclass
class Exported:
    """One written file: its function, its path, and the largest difference per output between
    onnxruntime and ae on the check batches."""

    function: str
    path: Path
    max_diff: dict[str, float]


def export(model_path: Path, out: Path | None = None, *, fpr: float = 0.01) -> list[Exported]:
    """Write the model's ONNX files, each checked against ae first; nothing is written unless all are.

    `fpr` chooses the calibrated thresholds in the score file's metadata, and the one its
    `anomalous` output applies, as `ae score --threshold auto --fpr` would.
    """
    check_available()
    if not 0 < fpr < 1:
        raise UsageError(f"--fpr must be between 0 and 1, got {fpr}")
    from aecli.io import modelfile

    from aecli.export import graphs

    file = modelfile.load(Path(model_path))
    if file.model.capabilities.codebook:  # its encode writes code numbers, its rarity runs the code prior
        raise UsageError(f"{model_path}: ae export does not export a model with a codebook (--variant vqvae) yet")
    paths = targets(model_path, out, functions(file.model.capabilities))
    traced = graphs.trace(file, fpr)
    built = {name: _build(name, traced, file, fpr) for name in paths}
    for name, (model, _) in built.items():
        write_bytes_atomic(paths[name], model.SerializeToString())
    return [Exported(name, paths[name], diffs) for name, (_, diffs) in built.items()]


def _build(function: str, traced: Any, file: Any, fpr: float):
    """One function's checked graph with its metadata, and the check's differences."""
    from aecli import __version__
    from aecli.export import graphs

    model, described = graphs.build(function, traced, file, fpr)
    diffs = graphs.check(function, model, file)
    capabilities = dataclasses.asdict(file.model.capabilities)
    metadata = {
        "aecli_function": function,
        "aecli_version": __version__,
        "source": Path(file.path).name,
        "variant": file.config.variant,
        "model_config": json.dumps(file.config.as_dict()),
        "capabilities": json.dumps(capabilities),
        **described,
        "check_max_abs_diff": json.dumps({k: float(f"{v:.3g}") for k, v in diffs.items()}),
    }
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    return model, diffs


__all__ = ["INSTALL", "Exported", "check_available", "export", "functions", "targets"]

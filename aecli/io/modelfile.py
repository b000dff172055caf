"""Model files: one .safetensors file with the weights and, as string metadata, all that describes them.

Metadata keys (all JSON strings but the first three; see docs/model-format.md):
  format="aecli", format_version, aecli_version, variant,
  model_config, train_config, training (summary), calibration, latent_stats,
  optimizer (only while a run can be resumed: Adam's settings and where training stopped).
Tensors are the model's state_dict; Adam's moment tensors ride along under `optimizer.`.
Loading never unpickles anything: safetensors holds only raw tensors and strings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aecli import __version__, samplers
from aecli.config import (
    ModelConfig,
    TrainConfig,
    model_config_from_json,
    to_json,
    train_config_from_json,
)
from aecli.errors import ModelFileError, OutputError
from aecli.io.files import leader_writes, write_bytes_atomic
from aecli.models.capabilities import capabilities_of
from aecli.models.registry import objective_class

FORMAT = "aecli"
FORMAT_VERSION = 4  # 4: a residual denoiser, whose output older readers would misread (written for those
# alone; the others stay 3); 3: `resize` (pad, crop or stretch); 2: each variant its own settings, and `bottleneck`
_OPTIM = "optimizer."

if TYPE_CHECKING:  # torch is imported where tensors are touched: `ae info` stays light
    import torch
    from torch import nn


@dataclass
class ModelFile:
    """A loaded model file: the model (eval mode, on CPU) and everything its metadata says."""

    path: Path
    model: nn.Module
    config: ModelConfig
    train_config: TrainConfig | None
    training: dict[str, Any]
    calibration: dict[str, Any] | None
    latent_stats: dict[str, Any] | None
    optimizer: dict[str, Any] | None  # Adam's state_dict and the position, for --resume


def save(path: Path, *parts: Any, **named: Any) -> None:
    """Write the model file of snapshot(*parts) atomically: a reader never sees a half-written file."""
    write(path, snapshot(*parts, **named))


def snapshot(
    model: nn.Module,
    train_config: TrainConfig,
    training: dict[str, Any],
    calibration: dict[str, Any] | None = None,
    latent_stats: dict[str, Any] | None = None,
    optimizer: dict[str, Any] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What save() writes, copied off the device: the run may go on while write() puts it on disk."""
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION if model.objective.needs_input(model.config) else 3),
        "aecli_version": __version__,
        "variant": model.config.variant,
        "model_config": to_json(model.config),
        "train_config": to_json(train_config),
        "training": json.dumps(training, separators=(",", ":")),
    }
    if calibration is not None:
        metadata["calibration"] = json.dumps(calibration, separators=(",", ":"))
    if latent_stats is not None:
        metadata["latent_stats"] = json.dumps(latent_stats, separators=(",", ":"))
    if optimizer is not None:
        state, extra = _flatten_optimizer(optimizer["state_dict"])
        tensors.update(state)
        metadata["optimizer"] = json.dumps({**extra, "position": optimizer["position"]}, separators=(",", ":"))
    return tensors, metadata


def write(path: Path, snapshot: tuple[dict[str, torch.Tensor], dict[str, str]]) -> None:
    from safetensors.torch import save as to_bytes

    tensors, metadata = snapshot
    write_bytes_atomic(path, canonical(to_bytes(tensors, metadata=metadata)))


def canonical(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted.

    safetensors writes the header from a hash map, whose order changes from one process to the
    next; sorted, the same model gives the same bytes. The tensor data is untouched (its offsets
    count from the end of the header), and the header stays padded to 8 bytes as the format asks.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + n :]


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch

    tensors = {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            tensors[f"{_OPTIM}{index}.{key}"] = torch.as_tensor(value).detach().to("cpu", copy=True).contiguous()
    return tensors, {"param_groups": state_dict["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index, key = name[len(_OPTIM) :].split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": extra["param_groups"]}


@dataclass(frozen=True)
class Stored:
    """One tensor as the header places it: shape, safetensors dtype, and its bytes in the file."""

    shape: list[int]
    dtype: str
    start: int  # absolute offsets in the file
    end: int


class _NotSafetensors(ValueError):
    pass


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_MAX_HEADER = 100 * 2**20  # the limit safetensors itself sets


def read_metadata(path: Path) -> tuple[dict[str, str], dict[str, Stored]]:
    """The metadata and where each tensor lies, read and checked from the header alone (no torch)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file" if not path.exists() else f"{path}: not a file")
    try:
        metadata, tensors = _parse_header(path)
    except (_NotSafetensors, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not a safetensors model file ({_why_not(path, e)})") from None
    _check_metadata(path, metadata)
    return metadata, tensors


def _parse_header(path: Path) -> tuple[dict[str, str], dict[str, Stored]]:
    """The safetensors layout: 8 bytes of header length, a JSON header, then the tensors' bytes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _NotSafetensors("shorter than a header")
        n = int.from_bytes(head, "little")
        if n > min(_MAX_HEADER, size - 8):
            raise _NotSafetensors("its header length runs past the end of the file")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise _NotSafetensors("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _NotSafetensors("its metadata is not a map of strings")
    body, tensors = size - 8 - n, {}
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            valid = dtype in _DTYPE_BYTES and all(isinstance(d, int) and d >= 0 for d in shape)
            valid = valid and 0 <= begin <= end <= body and end - begin == math.prod(shape) * _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise _NotSafetensors(f"tensor {name!r} is described wrongly or lies outside the file")
        tensors[name] = Stored(list(shape), dtype, 8 + n + begin, 8 + n + end)
    return metadata, tensors


def _why_not(path: Path, error: Exception) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(128)
    except OSError as e:
        return e.strerror or str(e)
    if (head[:4] == b"PK\x03\x04" and b"data.pkl" in head) or head[:2] == b"\x80\x02":
        return (
            "it is a PyTorch pickle checkpoint, which aecli never unpickles; retrain with `ae train`, or "
            "convert a state_dict as docs/model-format.md shows"
        )
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _check_metadata(path: Path, metadata: dict[str, str]) -> None:
    if metadata.get("format") != FORMAT:
        raise ModelFileError(f"{path}: a safetensors file without aecli metadata (made by another tool?)")
    version = metadata.get("format_version", "")
    if not version.isdigit():
        raise ModelFileError(f"{path}: unreadable format_version {version!r}")
    if int(version) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this aecli reads ({FORMAT_VERSION}); upgrade aecli"
        )
    missing = [k for k in ("model_config", "training") if k not in metadata]
    if missing:
        raise ModelFileError(f"{path}: aecli metadata lacks {', '.join(missing)}")


def check_replaceable(path: Path) -> None:
    """An output may replace an earlier model file, never some other file typed by mistake
    (a device such as /dev/null holds nothing to lose)."""
    path = Path(path)
    if path.is_file():
        try:
            read_metadata(path)
        except ModelFileError:
            raise OutputError(f"refusing to overwrite {path}: it is not an aecli model file") from None


def describe(path: Path) -> dict[str, Any]:
    """Everything a model file says about itself (what `ae info` shows), from its header and a
    scan of its weights for NaN; no torch. That the weights fit the config is checked by `load`."""
    metadata, tensors = read_metadata(path)
    config = _stored_config(path, metadata)
    info: dict[str, Any] = {
        "path": str(path),
        "file_bytes": Path(path).stat().st_size,
        "format_version": int(metadata["format_version"]),
        "aecli_version": metadata.get("aecli_version"),
        "parameters": sum(math.prod(t.shape) for name, t in tensors.items() if not name.startswith(_OPTIM)),
        "resumable": "optimizer" in metadata,
        "capabilities": dataclasses.asdict(capabilities_of(config)),
    }
    for key in ("model_config", "train_config", "training", "calibration", "latent_stats"):
        try:
            info[key] = json.loads(metadata[key]) if key in metadata else None
        except ValueError:
            raise ModelFileError(f"{path}: damaged aecli metadata ({key} is not JSON)") from None
    stats, can_sample = info["latent_stats"], info["capabilities"]["sample"]
    objective = objective_class(config.variant)
    generative = objective.generative  # a prior fixes the latent's scale
    info["samplers"] = samplers.offered(stats, generative, objective.learnt_prior) if can_sample else []
    info["active_latent_dims"] = samplers.active_dimensions(stats) if generative else None
    info.update(objective.report(config, lambda name: _stored_floats(path, tensors, name)))
    bad = _non_finite_tensors(path, tensors)
    info["problems"] = [*_non_finite_weights(path, bad), *_non_finite_metadata(path, info)]
    info["caveats"] = [c for c in [learning_caveat(info["calibration"])] if c]
    return info


def _stored_config(path: Path, metadata: dict[str, str]) -> ModelConfig:
    """The model config a file stores, once it is known to describe a model."""
    try:
        config = model_config_from_json(metadata["model_config"])
        capabilities_of(config)
    except (ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"{path}: damaged aecli metadata ({e})") from None
    except Exception as e:  # a config the model classes reject (an unknown variant, negative sizes)
        raise ModelFileError(f"{path}: its config does not build a model ({str(e).splitlines()[0]})") from None
    return config


def _stored_floats(path: Path, tensors: dict[str, Stored], name: str) -> list[float]:
    """A float32 tensor's numbers, flat, read from the file's bytes (no torch, no numpy)."""
    t = tensors.get(name)
    if t is None or t.dtype != "F32":
        raise ModelFileError(f"{path}: damaged aecli model file (no float32 tensor {name})")
    with open(path, "rb") as f:
        f.seek(t.start)
        data = f.read(t.end - t.start)
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def _non_finite_tensors(path: Path, tensors: dict[str, Stored]) -> list[str]:
    """The weights holding NaN or infinity, found in the file's bytes (no torch, no numpy)."""
    bad = []
    with open(path, "rb") as f:
        for name, t in tensors.items():
            if name.startswith(_OPTIM) or t.dtype not in _EXPONENT:
                continue  # whole numbers are always finite
            f.seek(t.start)
            if _any_non_finite(f.read(t.end - t.start), t.dtype):
                bad.append(name)
    return bad


# per float type: its width in bytes, and the exponent's bits in its top byte and the one below
_EXPONENT = {"F16": (2, 0x7C, 0x00), "BF16": (2, 0x7F, 0x80), "F32": (4, 0x7F, 0x80), "F64": (8, 0x7F, 0xF0)}


def _any_non_finite(data: bytes, dtype: str) -> bool:
    """An IEEE float is infinite or NaN when all its exponent bits are set: tested on every value's
    two top bytes (little-endian) at once, with bytes.translate and one AND of two big integers."""
    width, high, low = _EXPONENT[dtype]

    def all_set(start: int, mask: int) -> int:
        table = bytes(int(b & mask == mask) for b in range(256))
        return int.from_bytes(data[start::width].translate(table), "little")

    return bool(all_set(width - 1, high) & all_set(width - 2, low))


LEARNT_LITTLE = 0.5  # held-out mse at half the images' own variance or more: barely past the average image


def learnt(calibration: Any) -> tuple[float, float] | None:
    """(held-out mse, the held-out images' variance around their mean image), where both were measured."""
    try:
        mse, variance = float(calibration["metrics"]["mse"]["mean"]), float(calibration["pixel_variance"])
    except (KeyError, TypeError, ValueError):
        return None
    return (mse, variance) if variance > 0 and math.isfinite(mse) else None


def learning_caveat(calibration: Any) -> str | None:
    """When a model reconstructs held-out images hardly better than their average image does."""
    measured = learnt(calibration)
    if measured is None or measured[0] < LEARNT_LITTLE * measured[1]:
        return None
    mse, variance = measured
    return (
        f"the model has learnt little: its error on held-out images (mse {mse:.3g}) is {mse / variance:.0%} of "
        f"what the images' average alone gives ({variance:.3g}); train for more steps (more --epochs, "
        "a smaller --batch-size) or on more images"
    )


def _non_finite_weights(path: Path, bad: list[str]) -> list[str]:
    """A diverged training's weights: NaN or infinite values make every output and score NaN."""
    if not bad:
        return []
    return [f"{path}: its weights hold NaN or infinite values ({', '.join(bad[:2])}); its training diverged"]


def _non_finite_metadata(path: Path, extras: dict[str, Any]) -> list[str]:
    """A NaN threshold flags nothing (`score > nan` is false), so a calibration must be finite."""
    return [
        f"{path}: its {key} holds NaN or infinite values; recalibrate it (ae calibrate) or retrain"
        for key in ("calibration", "latent_stats")
        if not _finite(extras.get(key))
    ]


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def load(path: Path, with_optimizer: bool = False) -> ModelFile:
    """Rebuild the model from the config in its own file, then load and check the weights."""
    from safetensors import safe_open

    from aecli.models import create_model

    path = Path(path)
    metadata, tensors = read_metadata(path)
    config = _checked_skeleton(path, metadata, tensors).config
    try:
        train_config = train_config_from_json(metadata["train_config"]) if "train_config" in metadata else None
        extras = {
            k: json.loads(metadata[k]) if k in metadata else None
            for k in ("training", "calibration", "latent_stats", "optimizer")
        }
    except (ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"{path}: damaged aecli metadata ({e})") from None
    model = create_model(config)
    try:  # read the optimizer's tensors only when resuming: inference needs the weights alone
        with safe_open(path, framework="pt") as f:
            wanted = [k for k in f.keys() if with_optimizer or not k.startswith(_OPTIM)]
            tensors = {k: f.get_tensor(k) for k in wanted}
    except Exception as e:
        raise ModelFileError(f"{path}: cannot read weights ({str(e).splitlines()[0]})") from None
    weights = {k: v for k, v in tensors.items() if not k.startswith(_OPTIM)}
    bad = [name for name, w in weights.items() if w.is_floating_point() and not w.isfinite().all()]
    problems = [*_non_finite_weights(path, bad), *_non_finite_metadata(path, extras)]
    if problems:
        raise ModelFileError(problems[0])
    model.load_state_dict(weights)
    optimizer = None
    if with_optimizer and extras["optimizer"] is not None:
        optim_tensors = {k: v for k, v in tensors.items() if k.startswith(_OPTIM)}
        optimizer = {
            "state_dict": _unflatten_optimizer(optim_tensors, extras["optimizer"]),
            "position": extras["optimizer"]["position"],
        }
    model.eval()
    return ModelFile(
        path, model, config, train_config, extras["training"], extras["calibration"], extras["latent_stats"], optimizer
    )


@leader_writes
def replace_calibration(path: Path, calibration: dict[str, Any], out: Path | None = None) -> None:
    """Write the model file (or a copy at `out`) with a new calibration; all else byte for byte.

    The new file is written beside the target and renamed over it, so a crash leaves the old one.
    """
    from safetensors import safe_open
    from safetensors.torch import save as to_bytes

    metadata, _ = read_metadata(path)
    try:
        with safe_open(path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as e:
        raise ModelFileError(f"{path}: cannot read weights ({str(e).splitlines()[0]})") from None
    metadata["calibration"] = json.dumps(calibration, separators=(",", ":"))
    write_bytes_atomic(Path(out or path), canonical(to_bytes(tensors, metadata=metadata)))


def _checked_skeleton(path: Path, metadata: dict[str, str], tensors: dict[str, Stored]) -> nn.Module:
    """The model the stored config builds, on the meta device (no memory), once it has the
    header's tensor shapes: a config that asks for a huge model fails before allocating it."""
    import torch

    from aecli.models import create_model

    config = _stored_config(path, metadata)
    try:
        with torch.device("meta"):
            skeleton = create_model(config)
    except Exception as e:  # a config the model classes reject (e.g. negative sizes)
        raise ModelFileError(f"{path}: its config does not build a model ({str(e).splitlines()[0]})") from None
    expected = {k: list(v.shape) for k, v in skeleton.state_dict().items()}
    _check_shapes(path, expected, {k: t.shape for k, t in tensors.items() if not k.startswith(_OPTIM)})
    return skeleton


def _check_shapes(path: Path, expected: dict[str, list[int]], stored: dict[str, list[int]]) -> None:
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    if missing or unexpected or wrong:
        problems = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if names:
                problems.append(f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}")
        raise ModelFileError(f"{path}: weights do not match the model config ({'; '.join(problems)})")

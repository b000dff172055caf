"""Model files that are foreign, damaged or newer fail with one line; nothing is unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from aecli.io import modelfile
from aecli.config import ModelConfig, TrainConfig
from aecli.models import create_model


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "m.safetensors"
    modelfile.save(path, create_model(ModelConfig().resolved(1, 8)), TrainConfig(), {"epochs": 0})
    return path


def _rewrite_metadata(path, **changes):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        metadata = {**f.metadata(), **changes}
    save_file(load_file(path), path, metadata=metadata)


def _fails(run, path, message):
    result = run("info", path)
    assert result.exit_code == 1, result.stdout
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_missing_file(run, tmp_path):
    _fails(run, tmp_path / "nope.safetensors", "no such model file")


def test_random_bytes(run, tmp_path):
    (tmp_path / "r.safetensors").write_bytes(bytes(range(256)) * 4)
    _fails(run, tmp_path / "r.safetensors", "not a safetensors model file")


def test_pickle_checkpoint_is_refused_unopened(run, tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    _fails(run, tmp_path / "model.pt", "PyTorch pickle checkpoint")


def test_safetensors_from_another_tool(run, tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    _fails(run, tmp_path / "other.safetensors", "without aecli metadata")


def test_newer_format_version(run, model_path):
    _rewrite_metadata(model_path, format_version="99")
    _fails(run, model_path, "format version 99 is newer")


def test_weights_that_do_not_match_the_config(model_path):
    config = json.loads(json.dumps({**ModelConfig().resolved(1, 8).as_dict(), "latent_dim": 7}))
    _rewrite_metadata(model_path, model_config=json.dumps(config))
    with pytest.raises(modelfile.ModelFileError, match="weights do not match the model config"):
        modelfile.load(model_path)


def _with_nan_weights(source: Path, target: Path) -> Path:
    from safetensors import safe_open

    with safe_open(source, framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118
    first = sorted(tensors)[0]
    tensors[first] = tensors[first].clone().fill_(float("nan"))
    save_file(tensors, target, metadata=metadata)
    return target


@pytest.mark.parametrize("command", ["score", "calibrate", "encode", "denoise"])
def test_every_command_refuses_a_model_with_nan_weights_in_one_line(run, model_path, tmp_path, command):
    bad = _with_nan_weights(model_path, tmp_path / "bad.safetensors")
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8), np.uint8))
    extra = {"denoise": ["-o", "out"], "encode": ["-o", "z.npy"]}.get(command, [])
    result = run(command, "x.npy", "-m", bad, *extra)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "NaN or infinite" in result.stderr and "diverged" in result.stderr


def test_info_shows_a_model_with_nan_weights_with_a_warning(run, model_path, tmp_path):
    bad = _with_nan_weights(model_path, tmp_path / "bad.safetensors")
    result = run("info", bad)
    assert result.exit_code == 0 and "Warning:" in result.stderr and "NaN or infinite" in result.stderr


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), None])
def test_describe_finds_non_finite_weights_of_any_float_type_from_their_bytes(model_path, tmp_path, dtype, value):
    """`ae info` scans the raw bytes without torch; half and bfloat16 files must not slip through."""
    from safetensors import safe_open

    with safe_open(model_path, framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k).to(dtype) for k in f.keys()}, f.metadata()  # noqa: SIM118
    if value is not None:
        tensors[sorted(tensors)[-1]].view(-1)[-1] = value
    save_file(tensors, tmp_path / "m.safetensors", metadata=metadata)
    problems = modelfile.describe(tmp_path / "m.safetensors")["problems"]
    assert bool(problems) == (value is not None)


def test_a_nan_calibration_is_refused(run, model_path, tmp_path):
    nan = {"split": "validation", "metrics": {"mse": {"p99": float("nan")}}}
    _rewrite_metadata(model_path, calibration=json.dumps(nan))
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8), np.uint8))
    result = run("score", "x.npy", "-m", model_path)
    assert result.exit_code == 1 and "calibration holds NaN" in result.stderr

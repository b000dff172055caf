"""The denoiser's noise models (issue 14): a level range for one blind model, and a sensor's
photon noise. Corruption is checked against its stated distribution on flat images, where the
mean and variance are known; the CLI trains and evaluates both on tiny data."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from aecli import infer
from aecli.config import ModelConfig
from aecli.models.objectives.denoise import Denoise, corrupt, levels
from aecli.runtime import step_seed

FAST = ["--epochs", "1", "--batch-size", "8", "-q"]


def _flat(level: float, n: int = 16, size: int = 64) -> torch.Tensor:
    return torch.full((n, 1, size, size), level)


@pytest.mark.parametrize(
    "kind, level, gain, sigma",
    [
        ("gaussian", 0.5, 0.0, 0.05),
        ("gaussian", 0.4, 0.0, 0.1),
        ("poisson", 0.3, 10.0, 0.0),  # 3 photons on average: a count of 11 (clipped) is rarer than 1 in 3,000
        ("poisson", 0.5, 100.0, 0.0),
        ("poisson", 0.5, 1000.0, 0.0),
        ("poisson-gaussian", 0.5, 100.0, 0.05),  # std 0.086: the clip is 5.8 std away
        ("poisson-gaussian", 0.4, 300.0, 0.02),
    ],
)
def test_corruption_has_the_stated_mean_and_variance_on_flat_images(kind, level, gain, sigma):
    """Mean x; variance sigma² (gaussian), x / gain (poisson), x / gain + sigma² (poisson-gaussian)."""
    x = _flat(level)
    noisy = corrupt(x, kind, sigma, gain, torch.Generator().manual_seed(1)).double()
    expected_var = (level / gain if kind != "gaussian" else 0) + sigma**2
    n = noisy.numel()
    assert abs(noisy.mean().item() - level) < 4 * (expected_var / n) ** 0.5
    assert noisy.var().item() == pytest.approx(expected_var, rel=0.04)  # sampling error about 0.6 % to 1.2 %
    if kind == "poisson":  # counts of photons: every value a whole number of 1 / gain
        counts = noisy * gain
        assert torch.allclose(counts, counts.round(), atol=1e-4)


def test_gaussian_add_noise_is_what_it_was():
    """`ae denoise --add-noise` keeps its exact noise: reports made before stay comparable."""
    x = torch.rand(1, 20, 20)
    generator = torch.Generator().manual_seed(step_seed(7, 0, 3))
    before = (x + 0.2 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    assert torch.equal(infer.add_noise(x, 0.2, 7, 3), before)


def test_a_range_draws_one_level_per_image_within_it_and_covers_it():
    torch.manual_seed(0)
    drawn = levels([0.02, 0.1], _flat(0.5, n=2000, size=1)).flatten()
    assert drawn.shape == (2000,) and drawn.min() >= 0.02 and drawn.max() <= 0.1
    assert drawn.min() < 0.021 and drawn.max() > 0.099  # uniform: the ends are reached
    assert abs(drawn.mean().item() - 0.06) < 0.002
    assert levels(0.2, _flat(0.5)) == 0.2  # one number stays one number

    objective = Denoise(ModelConfig(variant="denoising", sigma=[0.02, 0.1]))
    x = _flat(0.5, n=64, size=48)
    stds = (objective.corrupt(x) - x).flatten(1).std(1)
    assert stds.min() > 0.02 - 0.005 and stds.max() < 0.1 + 0.01  # each image one level within the range
    assert stds.max() - stds.min() > 0.05  # and the images of one batch differ


def test_one_blind_model_trains_on_a_range_and_denoises_with_no_level(run, npy_file):
    result = run("train", npy_file, "--variant", "denoising", "--sigma", "0:0.2", "-o", "blind.safetensors", *FAST)
    assert result.exit_code == 0, result.stderr
    config = json.loads(run("info", "blind.safetensors", "--json").stdout)["model_config"]
    assert config["sigma"] == [0.0, 0.2] and config["noise"] == "gaussian"
    result = run("denoise", npy_file, "-m", "blind.safetensors", "-o", "out", "-q")
    assert result.exit_code == 0, result.stderr
    result = run("denoise", npy_file, "-m", "blind.safetensors", "--add-noise", "0.1", "--reference", npy_file)
    assert result.exit_code == 0 and "input (noise 0.1)" in result.stdout


def test_a_photon_noise_model_trains_and_is_evaluated_on_the_same_noise(run, npy_file):
    flags = ["--variant", "denoising", "--noise", "poisson", "--gain", "30", "-o", "p.safetensors", *FAST]
    assert run("train", npy_file, *flags).exit_code == 0
    config = json.loads(run("info", "p.safetensors", "--json").stdout)["model_config"]
    assert config["noise"] == "poisson" and config["gain"] == 30.0
    result = run("denoise", npy_file, "-m", "p.safetensors", "--noise", "poisson", "--gain", "30",
                 "--reference", npy_file, "--save-noisy", "noisy")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "input (noise poisson gain 30)" in result.stdout
    result = run("denoise", npy_file, "-m", "p.safetensors", "--noise", "poisson-gaussian", "--gain", "30",
                 "--add-noise", "0.02", "--reference", npy_file)  # fmt: skip
    assert result.exit_code == 0 and "poisson-gaussian gain 30, sigma 0.02" in result.stdout


@pytest.mark.parametrize("text", ["0.3:0.1", "a:b", "-1:0.2", "0:1.5", "0:0.1:0.2", "0.1:0.1", "nan:0.2"])
def test_an_invalid_range_is_a_one_line_usage_error(run, npy_file, text):
    result = run("train", npy_file, "--variant", "denoising", "--sigma", text, "--epochs", "1")
    assert result.exit_code == 2 and result.stderr.startswith("Error: sigma") and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--noise", "poisson"], "--noise poisson needs --gain"),
        (["--gain", "30"], "--gain needs --noise poisson or poisson-gaussian"),
        (["--noise", "poisson", "--gain", "30", "--add-noise", "0.1"], "use --noise poisson-gaussian"),
        (["--noise", "poisson", "--gain", "0"], "--gain must be > 0"),
    ],
)
def test_denoise_noise_flags_that_do_not_fit_say_so(run, npy_file, args, message):
    result = run("denoise", npy_file, "-m", "missing.safetensors", "-o", "out", *args)
    assert result.exit_code == 2 and message in result.stderr


def test_a_range_reads_from_yaml_as_text_or_list_and_round_trips_through_print_config(run, tmp_path):
    for value in ('"0:0.2"', "[0, 0.2]"):
        (tmp_path / "c.yaml").write_text(f"variant: denoising\nsigma: {value}\n")
        printed = run("train", "--config", "c.yaml", "--print-config").stdout
        assert yaml.safe_load(printed)["sigma"] == [0.0, 0.2]
        (tmp_path / "again.yaml").write_text(printed)
        assert yaml.safe_load(run("train", "--config", "again.yaml", "--print-config").stdout)["sigma"] == [0.0, 0.2]
    single = run("train", "--variant", "denoising", "--sigma", "0.1", "--print-config").stdout
    assert yaml.safe_load(single)["sigma"] == 0.1  # one number stays a number

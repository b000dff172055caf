"""The denoiser's levers (issue 14): --residual (predict the noise, give back the input less it;
on by default for a unet, off for a bottleneck conv) and --augment (a random flip and quarter
turn of each training image; off), and files from before them, which lack the keys, load as
before (test_legacy_files.py); and `ae denoise --tta`, the mean of the model's outputs over the
eight views of each input."""

from __future__ import annotations

import json

import pytest
import torch

from aecli.config import ModelConfig
from aecli.models.capabilities import capabilities_of
from aecli.models.model import create_model
from aecli.models.objectives.denoise import dihedral
from aecli.models.symmetries import averaged

FAST = ["--epochs", "1", "--batch-size", "8", "-q"]


@pytest.mark.parametrize("flags", [["--no-residual"], ["--augment"], ["--augment", "--loss", "bce"]])
def test_a_lever_trains_denoises_and_is_stored_in_the_model_file(run, npy_file, flags):
    result = run("train", npy_file, "--variant", "denoising", *flags, "-o", "m.safetensors", *FAST)
    assert result.exit_code == 0, result.stderr
    config = json.loads(run("info", "m.safetensors", "--json").stdout)["model_config"]
    residual = "--no-residual" not in flags
    assert config["residual"] == residual and config["augment"] == ("--augment" in flags)
    version = json.loads(run("info", "m.safetensors", "--json").stdout)["format_version"]
    assert version == (4 if residual else 3)  # older readers refuse a residual file, not misread it
    result = run("denoise", npy_file, "-m", "m.safetensors", "--add-noise", "0.2", "--reference", npy_file)
    assert result.exit_code == 0, result.stderr
    assert "psnr" in result.stdout.lower()


@pytest.mark.parametrize("arch, residual", [("unet", True), ("conv", False)])
def test_residual_is_on_where_skips_carry_the_noise_and_augment_off_unless_asked(run, npy_file, arch, residual):
    result = run("train", npy_file, "--variant", "denoising", "--arch", arch, "-o", "m.safetensors", *FAST)
    assert result.exit_code == 0, result.stderr
    config = json.loads(run("info", "m.safetensors", "--json").stdout)["model_config"]
    assert config["residual"] is residual and config["augment"] is False


def _model(**settings):
    config = ModelConfig(variant="denoising", channels=1, image_size=16, widths=[8, 16], **settings)
    return create_model(config).eval()


def test_a_residual_model_gives_back_its_input_less_the_predicted_noise():
    model = _model(residual=True)
    head = model.net.head
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), x)  # no noise predicted: the input itself
        head.bias.fill_(0.25)
        assert torch.allclose(model(x), (x - 0.25).clamp(0, 1))  # and always within [0, 1]
    plain = _model(residual=False)
    torch.nn.init.zeros_(plain.net.head.weight), torch.nn.init.zeros_(plain.net.head.bias)
    with torch.no_grad():
        assert torch.equal(plain(x), torch.full_like(x, 0.5))  # the sigmoid of zero logits, as before


def test_a_residual_loss_is_the_mse_of_the_estimate_and_reaches_the_network():
    model = _model(residual=True, sigma=0.1).train()
    loss = model.loss({"images": torch.rand(4, 1, 16, 16)})["loss"]
    loss.backward()
    assert loss.item() > 0 and model.net.head.weight.grad.abs().sum() > 0


def test_a_residual_conv_model_cannot_decode_a_latent_alone(run, npy_file):
    config = ModelConfig(variant="denoising", arch="conv", channels=1, image_size=16, widths=[8, 16], residual=False)
    assert capabilities_of(config).decode
    assert not capabilities_of(config.replace(residual=True)).decode
    flags = ["--variant", "denoising", "--arch", "conv", "--residual", "-o", "r.safetensors", *FAST]
    assert run("train", npy_file, *flags).exit_code == 0
    assert run("encode", npy_file, "-m", "r.safetensors", "-o", "z.npy").exit_code == 0
    result = run("decode", "z.npy", "-m", "r.safetensors", "-o", "out")
    assert result.exit_code == 2 and "--no-residual" in result.stderr and "Traceback" not in result.stderr


def _views(image: torch.Tensor) -> list[torch.Tensor]:
    return [torch.rot90(v, k, (-2, -1)) for v in (image, image.flip(-1)) for k in range(4)]


def test_augment_shows_each_image_in_one_of_its_views():
    torch.manual_seed(0)
    x = torch.arange(64 * 2 * 5 * 5, dtype=torch.float32).view(64, 2, 5, 5)
    out = dihedral(x)
    seen = [next(i for i, v in enumerate(_views(a)) if torch.equal(v, b)) for a, b in zip(x, out)]
    assert len(set(seen)) == 8  # all 8 views drawn over 64 images
    wide = torch.arange(64 * 4 * 6, dtype=torch.float32).view(64, 1, 4, 6)
    out = dihedral(wide)
    assert out.shape == wide.shape  # not square: flips and half turns only
    assert all(any(torch.equal(v, b) for v in _views(a) if v.shape == a.shape) for a, b in zip(wide, out))


def test_tta_takes_every_view_back_before_averaging():
    x = torch.rand(2, 1, 5, 5)
    assert torch.allclose(averaged(lambda v: v, x), x)  # each view undone exactly
    wide = torch.rand(2, 1, 4, 6)  # a fully convolutional model's photo need not be square
    assert torch.allclose(averaged(lambda v: v, wide), wide)
    corner = torch.zeros(5, 5)
    corner[0, 0] = 1
    kept = averaged(lambda v: v * corner, x)  # a model that keeps only its top-left pixel
    expected = torch.zeros(5, 5)
    expected[0, 0] = expected[0, -1] = expected[-1, 0] = expected[-1, -1] = 0.25  # each corner in 2 of 8 views
    assert torch.allclose(kept, x * expected)


def test_denoise_tta_writes_the_averaged_estimate(run, npy_file, tmp_path):
    flags = ["--variant", "denoising", "--arch", "conv", "-o", "m.safetensors", *FAST]
    assert run("train", npy_file, *flags).exit_code == 0
    outs = {}
    for name, extra in (("plain", []), ("tta", ["--tta"])):
        result = run("denoise", npy_file, "-m", "m.safetensors", "--add-noise", "0.2", "-o", name, "-q", *extra)
        assert result.exit_code == 0, result.stderr
        outs[name] = sorted((tmp_path / name).rglob("*.png"))
    assert len(outs["plain"]) == 24 and [p.name for p in outs["plain"]] == [p.name for p in outs["tta"]]
    assert any(a.read_bytes() != b.read_bytes() for a, b in zip(outs["plain"], outs["tta"]))

"""`--variant noise2void`: a denoiser learnt from noisy images alone (blind-spot training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aecli.config import ModelConfig
from aecli.models import create_model
from aecli.models.objectives.noise2void import blind_spots, mask, masked_loss
from tests.conftest import blobs, write_pngs

SIGMA = 0.2


def noisy(clean: np.ndarray, seed: int) -> np.ndarray:
    """uint8 images with Gaussian noise of std SIGMA, clipped, as a camera would store them."""
    rng = np.random.default_rng(seed)
    x = clean.astype(np.float32) / 255 + SIGMA * rng.standard_normal(clean.shape)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def mse(folder, paths, clean: np.ndarray) -> float:
    got = np.stack([np.asarray(Image.open(folder / p.name), np.float32) / 255 for p in paths])
    return float(np.mean((got - clean.astype(np.float32) / 255) ** 2))


def test_trained_on_noisy_images_only_it_denoises_held_out_noisy_images(run, tmp_path):
    clean = blobs(80, seed=5)
    train, held = clean[:64], clean[64:]
    np.save(tmp_path / "noisy-train.npy", noisy(train, seed=1))  # the clean images are never shown
    paths = write_pngs(tmp_path / "noisy-held", noisy(held, seed=2))
    result = run(
        "train", "noisy-train.npy", "--variant", "noise2void", "--widths", "8,16", "--epochs", "15",
        "--batch-size", "4", "-o", "n2v.safetensors", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    result = run("denoise", "noisy-held", "-m", "n2v.safetensors", "-o", "clean-held", "-q")
    assert result.exit_code == 0, result.stderr
    before = float(np.mean((noisy(held, seed=2).astype(np.float32) / 255 - held / 255) ** 2))
    after = mse(tmp_path / "clean-held", paths, held)
    assert after < 0.5 * before, (after, before)  # about 0.03 before

    # the usual use: denoise the very images it learnt from
    train_paths = write_pngs(tmp_path / "noisy-train", noisy(train, seed=1))
    assert run("denoise", "noisy-train", "-m", "n2v.safetensors", "-o", "clean-train", "-q").exit_code == 0
    assert mse(tmp_path / "clean-train", train_paths, train) < 0.5 * before


def config(**changes) -> ModelConfig:
    settings = dict(variant="noise2void", arch="unet", image_size=16, channels=1, widths=[8, 16])
    return ModelConfig(**{**settings, **changes})


@pytest.mark.parametrize("hide_with", ["mean", "neighbour"])
def test_the_loss_sees_the_target_only_at_hidden_pixels_and_the_input_never_there(hide_with):
    model = create_model(config(hide_with=hide_with))
    x = torch.rand(4, 1, 16, 16)
    torch.manual_seed(0)
    hidden = blind_spots(x, 0.02)
    assert hidden.shape == (4, 1, 16, 16)
    assert int(blind_spots(torch.rand(4, 1, 14, 14), 0.02).sum()) == 4 * 2 * 2  # one in each 7x7 cell (stratified)
    torch.manual_seed(1)
    shown = mask(x, hidden, hide_with)
    assert torch.equal(shown[~hidden.expand_as(x)], x[~hidden.expand_as(x)])  # the rest is untouched
    moved = torch.where(hidden, 1 - x, x)
    torch.manual_seed(1)
    assert torch.equal(mask(moved, hidden, hide_with), shown)  # no hidden pixel's value shows anywhere

    losses = []
    for target in (x, torch.where(hidden, x, torch.rand_like(x))):  # other values everywhere but the hidden pixels
        torch.manual_seed(0)
        model.zero_grad()
        z, skips = model.objective.latent(model, mask(x, hidden, hide_with))
        loss = masked_loss(model.net.decode(z, skips), target, hidden, "l1")
        loss.backward()
        losses.append((float(loss.detach()), [p.grad.clone() for p in model.parameters()]))
    (l0, g0), (l1, g1) = losses
    assert l0 == l1 and all(torch.equal(a, b) for a, b in zip(g0, g1))


def test_training_adds_no_noise_and_the_model_says_it_denoises():
    model = create_model(config())
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(model.corrupt(x), x)
    assert model.capabilities.denoise
    assert torch.isfinite(model.loss({"images": x})["loss"])

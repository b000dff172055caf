"""Every registered variant: shapes for odd sizes and both channel counts, and a weights round trip."""

from __future__ import annotations

import pytest
import torch

from aecli.io import modelfile
from aecli.config import ModelConfig, TrainConfig
from aecli.errors import AecliError
from aecli.models import create_model, list_variants


@pytest.mark.parametrize("variant", list_variants())
@pytest.mark.parametrize("arch", ["conv", "unet"])
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (1, 9)])
def test_every_variant_keeps_shapes_and_latents(variant, arch, channels, size):
    model = create_model(ModelConfig(variant=variant, arch=arch, latent_dim=5).resolved(channels, size))
    x = torch.rand(3, channels, size, size)
    recon, z = model.analyse(x)
    assert recon.shape == x.shape
    assert 0 <= recon.min() and recon.max() <= 1
    assert z.shape == model.encode(x).shape == (3, *model.capabilities.latent_shape)
    assert model.capabilities.latent_shape[0] == 5
    loss = model.loss({"images": x})["loss"]
    loss.backward()
    assert torch.isfinite(loss)


def test_stages_reach_about_four_by_four():
    assert ModelConfig().resolved(1, 28).widths == [32, 64, 128]  # the seed template, padded to 32
    assert len(ModelConfig().resolved(1, 64).widths) == 4
    assert len(ModelConfig().resolved(1, 8).widths) == 1


def test_conv_models_decode_latents_and_unet_models_say_why_not():
    conv = create_model(ModelConfig(arch="conv").resolved(1, 16))
    assert conv.decode(torch.zeros(2, 32)).shape == (2, 1, 16, 16)
    unet = create_model(ModelConfig(arch="unet").resolved(1, 16))
    with pytest.raises(AecliError, match="skip connections"):
        unet.decode(torch.zeros(2, 32))


@pytest.mark.parametrize("variant", list_variants())
def test_model_file_round_trip_rebuilds_the_same_model(variant, tmp_path):
    model = create_model(ModelConfig(variant=variant).resolved(1, 12))
    path = tmp_path / "m.safetensors"
    modelfile.save(path, model, TrainConfig(), {"epochs": 0})
    loaded = modelfile.load(path)
    assert loaded.config == model.config
    x = torch.rand(2, 1, 12, 12)
    model.eval()
    assert torch.equal(loaded.model(x), model(x))


@pytest.mark.parametrize("variant", list_variants())
@pytest.mark.parametrize("arch", ["conv", "unet"])
def test_without_a_bottleneck_every_variant_runs_at_any_size_with_a_spatial_latent(variant, arch):
    config = ModelConfig(variant=variant, arch=arch, bottleneck=False, latent_dim=4, widths=[8, 16]).resolved(1, 16)
    model = create_model(config)
    assert model.capabilities.any_size and model.capabilities.latent_shape == (4, 4, 4)
    for h, w in [(16, 16), (24, 40), (13, 9)]:  # other sizes than the training size, odd ones too
        x = torch.rand(2, 1, h, w)
        recon, z = model.analyse(x)
        assert recon.shape == x.shape and z.shape == (2, 4, -(-h // 4), -(-w // 4))
    loss = model.loss({"images": torch.rand(2, 1, 16, 16)})["loss"]
    loss.backward()
    assert torch.isfinite(loss)


def test_a_conv_model_without_a_bottleneck_decodes_its_spatial_latents():
    model = create_model(ModelConfig(bottleneck=False, latent_dim=4, widths=[8, 16]).resolved(1, 16)).eval()
    x = torch.rand(3, 1, 16, 16)
    assert torch.allclose(model.decode(model.encode(x)), model(x), atol=1e-6)

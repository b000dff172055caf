"""--variant vqvae: a discrete code per image that encodes, decodes, samples from its prior and scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from aecli.cli import app
from aecli.io import modelfile
from aecli.models.codebook import Codebook
from tests.conftest import blobs


@pytest.fixture(scope="module")
def vq(tmp_path_factory):
    """A small VQ-VAE trained on discs: 16 codes of 8 numbers on a 4x4 grid."""
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("vq")
    np.save(root / "discs.npy", blobs(160))
    result = CliRunner().invoke(app, [
        "train", str(root / "discs.npy"), "--variant", "vqvae", "--codebook-size", "16", "--latent-dim", "8",
        "--epochs", "6", "--batch-size", "16", "-o", str(root / "vq.safetensors"), "-q",
    ])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return root


def test_encode_writes_whole_code_numbers_and_decode_takes_them_or_vectors(run, vq):
    model = vq / "vq.safetensors"
    assert run("encode", vq / "discs.npy", "-m", model, "-o", "codes.npz").exit_code == 0
    with np.load("codes.npz") as saved:
        codes, shape = saved["latents"], tuple(saved["latent_shape"])
    assert codes.dtype == np.uint8 and codes.shape == (160, 16) and shape == (4, 4)
    assert codes.max() < 16 and len(np.unique(codes)) > 1
    result = run("encode", vq / "discs.npy", "-m", model, "--continuous", "-o", "vectors.npy")
    assert result.exit_code == 0 and "128 floats each" in result.stderr
    assert np.load("vectors.npy").shape == (160, 8 * 4 * 4)
    assert run("decode", "codes.npz", "-m", model, "-o", "from_codes").exit_code == 0
    assert run("decode", "vectors.npy", "-m", model, "-o", "from_vectors").exit_code == 0
    for name in ("000000.png", "000159.png"):  # a code and the vectors it stands for are one latent
        a, b = (np.asarray(Image.open(f"{d}/{name}")) for d in ("from_codes", "from_vectors"))
        assert np.array_equal(a, b)


def test_code_numbers_stored_as_floats_decode_as_codes_when_whole(run, vq):
    model = vq / "vq.safetensors"
    assert run("encode", vq / "discs.npy", "-m", model, "-o", "codes.npy").exit_code == 0
    codes = np.load("codes.npy")
    np.save("floats.npy", codes.astype(np.float32))  # as a numpy or pandas round trip leaves them
    np.save("halves.npy", codes.astype(np.float32) + 0.5)
    assert run("decode", "codes.npy", "-m", model, "--grid", "a.png").exit_code == 0
    assert run("decode", "floats.npy", "-m", model, "--grid", "b.png").exit_code == 0
    assert open("a.png", "rb").read() == open("b.png", "rb").read()
    result = run("decode", "halves.npy", "-m", model, "--grid", "c.png")
    assert result.exit_code == 1 and "code numbers, which are whole" in result.stderr


def test_code_numbers_outside_the_codebook_are_a_one_line_error(run, vq):
    np.save("bad.npy", np.full((2, 16), 16, dtype=np.int64))
    result = run("decode", "bad.npy", "-m", vq / "vq.safetensors", "--grid", "g.png")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "codes 0 to 15" in result.stderr


def test_info_reports_codebook_use_and_the_prior_sampler(run, vq):
    details = json.loads(run("info", vq / "vq.safetensors", "--json").stdout)
    assert details["capabilities"]["codebook"] == 16
    assert details["samplers"][0] == "prior"
    codebook = details["codebook"]
    assert codebook["size"] == 16 and 8 <= codebook["used"] <= 16  # revived codes keep the book in use
    assert 1 < codebook["perplexity"] <= 16
    assert "codes in use" in run("info", vq / "vq.safetensors").stdout


def test_samples_come_from_the_learnt_prior_and_look_like_the_data(run, vq):
    model = vq / "vq.safetensors"
    result = run("sample", "-m", model, "-n", "16", "-o", "drawn", "--seed", "3")
    assert result.exit_code == 0 and "prior over codes" in result.stderr
    again = run("sample", "-m", model, "-n", "16", "-o", "again", "--seed", "3", "--sampler", "prior")
    assert again.exit_code == 0
    drawn = [np.asarray(Image.open(f"drawn/{i:06d}.png")) for i in range(16)]
    assert all(np.array_equal(a, np.asarray(Image.open(f"again/{i:06d}.png"))) for i, a in enumerate(drawn))
    # the prior learnt which codes go together: the training images' codes are likelier than random grids
    loaded = modelfile.load(model)
    with torch.no_grad():
        codes = loaded.model.eval().codes(torch.as_tensor(np.load(vq / "discs.npy")).float().div(255)[:, None])
        prior = loaded.model.heads["prior"]
        random = torch.randint(16, codes.flatten(1).shape, generator=torch.Generator().manual_seed(0))
        assert prior.nll(codes.flatten(1)).mean() < prior.nll(random).mean() - 0.5
    np.save("drawn.npy", np.stack(drawn))
    assert 0 < mean_rarity(run, "drawn.npy", model) < np.log(16) + 1  # scored as nats per cell


def mean_rarity(run, source, model) -> float:
    result = run("score", source, "-m", model, "--metric", "rarity", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    return float(np.mean([json.loads(line)["score"] for line in result.stdout.splitlines()]))


def test_a_vqvae_with_a_bottleneck_is_refused_in_one_line(run, npy_file):
    result = run("train", npy_file, "--variant", "vqvae", "--bottleneck", "-o", "v.safetensors", "-q")
    assert result.exit_code == 2
    assert "--no-bottleneck" in result.stderr and result.stderr.count("\n") == 1


def test_unused_codes_move_to_where_the_outputs_are():
    torch.manual_seed(0)
    book = Codebook(8, 2, dead_fraction=0.03)
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])

    def batch():
        z = centres[torch.randint(4, (256,))] + 0.05 * torch.randn(256, 2)
        return z.T.reshape(1, 2, 16, 16)

    book.follow(batch(), None)  # the first batch places the codes
    book.vectors.fill_(100.0)  # then every code is moved far from the data
    book.vectors[0] = 0.0  # but one, which takes every output at first
    for _ in range(50):
        z = batch()
        book.follow(z, book.nearest(z))
    nearest = torch.cdist(centres, book.vectors).min(1).values
    assert (nearest < 0.5).all()  # each cluster got a code of its own


def test_export_refuses_a_codebook_in_one_line(run, vq):
    pytest.importorskip("onnx")
    result = run("export", "-m", vq / "vq.safetensors", "-o", "vq.onnx")
    assert result.exit_code == 2 and "codebook" in result.stderr and result.stderr.count("\n") == 1

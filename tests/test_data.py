"""Inputs: every array layout, IDX files honest or lying, named datasets found or explained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aecli.data import batch_indices, named, open_inputs, stream
from aecli.errors import InputError
from tests.conftest import blobs, write_idx, write_pngs


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a,  # (N, H, W) uint8
        lambda a: a[..., None],  # (N, H, W, 1)
        lambda a: a[:, None],  # (N, 1, H, W)
        lambda a: a.astype(np.float32) / 255,  # floats in [0, 1]
    ],
)
def test_array_layouts_give_the_same_pixels(tmp_path, make):
    images = blobs(5, size=10)
    np.save(tmp_path / "a.npy", make(images))
    batch = open_inputs([str(tmp_path / "a.npy")]).load(np.array([3, 0]), 1, 10)
    expected = images[[3, 0]].astype(np.float32)[:, None] / 255
    assert np.allclose(batch.pixels.numpy(), expected, atol=1e-6)
    assert batch.index.tolist() == [3, 0]


def test_npz_with_labels_and_colour_conversion(tmp_path):
    rgb = blobs(4, size=8, channels=3)
    np.savez(tmp_path / "a.npz", images=rgb, labels=np.arange(4))
    images = open_inputs([str(tmp_path / "a.npz")])
    assert images.first_shape() == (3, 8, 8)
    assert images.label(2) == 2
    assert images.load(np.arange(4), 1, 8).pixels.shape == (4, 1, 8, 8)


def test_float_arrays_outside_unit_range_are_refused_or_skipped_row_by_row(tmp_path):
    array = np.full((3, 4, 4), 0.5, np.float32)
    array[1] = 3.0
    np.save(tmp_path / "bad.npy", array)
    images = open_inputs([str(tmp_path / "bad.npy")])
    with pytest.raises(InputError, match="bad.npy#1: .*in \\[0, 1\\]"):
        list(stream(images, batch_indices(range(3), 3), 1, 4, strict=True))
    (batch,) = stream(images, batch_indices(range(3), 3), 1, 4, strict=False)
    assert batch.index.tolist() == [0, 2] and len(batch.skipped) == 1


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_idx_plain_and_gzipped(tmp_path, name):
    images = blobs(3, size=6)
    path = write_idx(tmp_path / name, images)
    batch = open_inputs([str(path)]).load(np.arange(3), 1, 6)
    assert np.allclose(batch.pixels[:, 0].numpy() * 255, images, atol=1e-3)


def test_idx_header_that_lies_about_its_size(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", blobs(3, size=6))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match="IDX header says"):
        open_inputs([str(path)])


def test_directories_are_recursive_sorted_and_skip_hidden_and_other_files(tmp_path):
    write_pngs(tmp_path / "d" / "b", blobs(2))
    write_pngs(tmp_path / "d" / "a", blobs(2))
    write_pngs(tmp_path / "d" / ".cache", blobs(2))
    (tmp_path / "d" / "readme.txt").write_text("x")
    images = open_inputs([str(tmp_path / "d")])
    names = [Path(images.name(i)).relative_to(tmp_path / "d").as_posix() for i in range(len(images))]
    assert names == ["a/img000.png", "a/img001.png", "b/img000.png", "b/img001.png"]
    assert images.non_images == 1


def test_an_image_is_read_by_its_content_not_its_name(tmp_path):
    from PIL import Image

    Image.fromarray(blobs(1, size=9)[0]).save(tmp_path / "photo.png", format="JPEG")
    Image.fromarray(blobs(1, size=9)[0]).save(tmp_path / "scan.tif")
    images = open_inputs([str(tmp_path / "photo.png"), str(tmp_path / "scan.tif")])
    assert images.load(np.arange(2), 1, 9).pixels.shape == (2, 1, 9, 9)


def test_the_sample_ships_with_the_package():
    train, test = open_inputs(["sample"]), open_inputs(["sample:test"])
    assert (len(train), len(test)) == (2000, 500)
    assert train.first_shape() == (1, 28, 28)
    assert len(open_inputs(["sample:class=3"])) == 200


def test_fashion_mnist_missing_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setattr(named, "fashion_mnist_dirs", lambda: [tmp_path / "nowhere"])
    with pytest.raises(InputError, match="nowhere.*apt-get install dataset-fashion-mnist"):
        open_inputs(["fashion-mnist:test"])


def test_fashion_mnist_from_ae_data_dir(monkeypatch, tmp_path):
    root = tmp_path / "data" / "fashion-mnist"
    root.mkdir(parents=True)
    write_idx(root / "t10k-images-idx3-ubyte.gz", blobs(7, size=28))
    write_idx(root / "t10k-labels-idx1-ubyte", np.arange(7, dtype=np.uint8)[:, None, None][:, 0, 0])
    monkeypatch.setenv("AE_DATA_DIR", str(tmp_path / "data"))
    images = open_inputs(["fashion-mnist:test:class=2,3"])
    assert len(images) == 2 and images.label(1) == 3


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Fashion-MNIST not installed")
def test_the_real_fashion_mnist_when_installed():
    assert len(open_inputs(["fashion-mnist:test"])) == 10_000

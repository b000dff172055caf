"""Gzipped Fashion-MNIST is decoded once into the user's cache, and decoded again when it changes."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from aecli.data.named import cache_dir, open_named
from tests.conftest import blobs, write_idx


@pytest.fixture
def data(monkeypatch, tmp_path):
    """A gzipped test split of 6 images in $AE_DATA_DIR, and an empty $AE_CACHE_DIR."""
    root = tmp_path / "data" / "fashion-mnist"
    root.mkdir(parents=True)
    write_idx(root / "t10k-images-idx3-ubyte.gz", blobs(6, size=28))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(6, dtype=np.uint8))
    monkeypatch.setenv("AE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AE_CACHE_DIR", str(tmp_path / "cache"))
    return root


def cached(name: str) -> list:
    return sorted((cache_dir() / "fashion-mnist").glob(f"{name}-*.npy"))


def test_the_first_read_fills_the_cache_and_the_second_reads_it(data):
    first = open_named("fashion-mnist:test")
    [images], [labels] = cached("t10k-images-idx3-ubyte"), cached("t10k-labels-idx1-ubyte")
    # the cache alone now answers: a source with the same path, size and time is not decoded again
    source = data / "t10k-images-idx3-ubyte.gz"
    stat = source.stat()
    source.write_bytes(b"\0" * stat.st_size)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = open_named("fashion-mnist:test")
    assert isinstance(second.array, np.memmap)
    np.testing.assert_array_equal(second.array, first.array)
    np.testing.assert_array_equal(second.labels, np.arange(6))
    assert cached("t10k-images-idx3-ubyte") == [images] and cached("t10k-labels-idx1-ubyte") == [labels]


def test_a_changed_source_is_decoded_again_and_its_old_copy_removed(data):
    open_named("fashion-mnist:test")
    [old] = cached("t10k-images-idx3-ubyte")
    source = data / "t10k-images-idx3-ubyte.gz"
    write_idx(source, 255 - blobs(6, size=28))
    os.utime(source, ns=(1_000_000_000, 1_000_000_000))  # a new time, with no waiting for the clock
    images = open_named("fashion-mnist:test")
    np.testing.assert_array_equal(images.array[..., 0], 255 - blobs(6, size=28))
    assert cached("t10k-images-idx3-ubyte") != [old] and not old.exists()


def test_a_damaged_cache_is_decoded_again(data):
    open_named("fashion-mnist:test")
    [copy] = cached("t10k-images-idx3-ubyte")
    copy.write_bytes(b"not an npy")
    np.testing.assert_array_equal(open_named("fashion-mnist:test").array[..., 0], blobs(6, size=28))
    assert np.load(copy, allow_pickle=False).shape == (6, 28, 28)


def test_an_unwritable_cache_costs_only_time(data, monkeypatch, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("AE_CACHE_DIR", str(tmp_path / "a-file"))  # fails for root too, unlike chmod
    images = open_named("fashion-mnist:test:class=2,3")
    assert len(images) == 2 and list(images.labels) == [2, 3]
    assert capsys.readouterr() == ("", "")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_plain_idx_files_are_read_where_they_are(data):
    for path in data.iterdir():
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    assert isinstance(open_named("fashion-mnist:test").array, np.memmap)
    assert not (cache_dir() / "fashion-mnist").exists()


def test_the_cache_dir_follows_xdg_without_ae_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("AE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "aecli"


def test_the_cli_reads_through_the_cache(data, run, tmp_path):
    """`ae train` on the named set twice: the second run finds the copy the first one made."""
    made = []
    for model in ("a.safetensors", "b.safetensors"):
        result = run("train", "fashion-mnist:test", "-o", model, "--epochs", "1", "--quiet")
        assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
        made.append([(p.name, p.stat().st_ino) for p in sorted((cache_dir() / "fashion-mnist").iterdir())])
    assert len(made[0]) == 2 and made[1] == made[0]  # the same two files, not written again

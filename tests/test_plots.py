"""--plot on train, encode and score through the real CLI; PCA against a constructed case; no matplotlib."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from aecli.report import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.size == (800, 600)
        assert len(np.unique(np.asarray(image.convert("L")))) > 20  # something was drawn, not a blank canvas


def test_help_imports_neither_matplotlib_nor_torch():
    code = "import sys; from aecli.cli import main; sys.argv = ['ae', 'encode', '--help']\ntry: main()\nexcept SystemExit: pass\nprint(sorted({'matplotlib', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--plot" in out.stdout and out.stdout.splitlines()[-1] == "[]"


def test_train_plot_writes_the_loss_curves_beside_the_model(run, npy_file, tmp_path):
    result = run("train", npy_file, "--epochs", "2", "--batch-size", "8", "-o", "m.safetensors", "--plot")
    assert result.exit_code == 0, result.stderr
    assert "loss curves: m.loss.png" in result.stderr
    _assert_png(tmp_path / "m.loss.png")


def test_encode_plot_maps_latents_coloured_by_named_class(run, models, tmp_path):
    result = run("encode", "sample:test:class=1,7", "-m", models["ae"], "-o", "z.npy", "--plot", "map.png")
    assert result.exit_code == 0, result.stderr
    assert "latent map: map.png" in result.stderr
    assert np.load(tmp_path / "z.npy").shape[0] == 100  # the latents are written as without --plot
    _assert_png(tmp_path / "map.png")


def test_dataset_labels_name_fashion_mnist_classes_and_leave_plain_arrays_unlabelled(npy_file):
    from aecli.data import open_inputs
    from aecli.data.named import CLASS_NAMES

    images = open_inputs(["sample:test:class=7"], None)
    labels, names = plots.dataset_labels(images, np.arange(3))
    assert labels == [7, 7, 7] and names == CLASS_NAMES and names[7] == "Sneaker"
    assert plots.dataset_labels(open_inputs([str(npy_file)], None), np.arange(3)) == (None, None)


def test_score_plot_with_labels_and_twice_gives_the_same_bytes(run, models, mvtec, tmp_path):
    args = ("score", mvtec, "-m", models["ae"], "--labels", "folders", "-o", "s.csv")
    first = run(*args, "--plot", "a.png")
    assert first.exit_code == 0, first.stderr
    assert "histogram: a.png" in first.stderr
    _assert_png(tmp_path / "a.png")
    assert run(*args, "--plot", "b.png").exit_code == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_every_plot_is_the_same_bytes_for_the_same_inputs(tmp_path):
    rng = np.random.default_rng(0)
    vectors, labels = rng.normal(size=(40, 5)), [i % 3 for i in range(40)]
    history = {"train_loss": [1.0, 0.1, 0.01], "val_loss": [1.2, 0.2, 0.02]}
    for name in ("a", "b"):
        plots.loss_curves(history, tmp_path / f"loss-{name}.png")
        plots.latent_map(vectors, labels, tmp_path / f"map-{name}.png", class_names={0: "zero"})
        plots.score_histogram(np.exp(np.arange(30) / 3), 100.0, tmp_path / f"hist-{name}.png")  # log-x
    for kind in ("loss", "map", "hist"):
        _assert_png(tmp_path / f"{kind}-a.png")
        assert (tmp_path / f"{kind}-a.png").read_bytes() == (tmp_path / f"{kind}-b.png").read_bytes()


def test_tsne_map_is_seeded(tmp_path):
    pytest.importorskip("sklearn")
    vectors = np.random.default_rng(1).normal(size=(30, 4))
    for name in ("a", "b"):
        plots.latent_map(vectors, None, tmp_path / f"{name}.png", projection="tsne")
    _assert_png(tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_pca_orders_components_by_variance_and_recovers_the_axes():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(2000, 3)) * [10.0, 3.0, 0.5]  # variances 100, 9, 0.25 along hidden axes
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    coords, explained = plots.pca(source @ rotation.T + 5.0, 2)
    assert coords.shape == (2000, 2)
    assert explained[0] > explained[1] > 0 and explained.sum() < 1
    assert explained == pytest.approx(np.array([100, 9]) / 109.25, abs=0.01)
    assert coords[:, 0].var() > coords[:, 1].var()
    for k in range(2):  # each component is a hidden axis, up to sign
        assert abs(np.corrcoef(coords[:, k], source[:, k])[0, 1]) > 0.999
    flat, share = plots.pca(np.arange(10.0)[:, None], 2)  # one dimension: padded with a zero axis
    assert share == pytest.approx([1.0, 0.0]) and not flat[:, 1].any()


def test_log_axes_only_for_values_spanning_decades():
    assert plots._spans_decades(np.array([1.0, 20.0]), 1)
    assert not plots._spans_decades(np.array([1.0, 5.0]), 1)
    assert not plots._spans_decades(np.array([-1.0, 500.0]), 1)  # not all positive: linear


@pytest.mark.parametrize("command", ["train", "encode", "score"])
def test_without_matplotlib_plot_fails_in_one_line_before_any_work(run, npy_file, tmp_path, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    args = {
        "train": ("train", npy_file, "-o", "m.safetensors", "--plot"),
        "encode": ("encode", npy_file, "-m", "missing.safetensors", "-o", "z.npy", "--plot", "map.png"),
        "score": ("score", npy_file, "-m", "missing.safetensors", "-o", "s.csv", "--plot", "hist.png"),
    }[command]
    result = run(*args)  # a missing model would fail later: the matplotlib check comes first
    assert result.exit_code == 1
    assert result.stderr == "Error: --plot needs matplotlib: pip install 'aecli[plot]'\n"
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs.npy"]  # nothing written


@pytest.mark.parametrize(
    "projection, module, message",
    [
        ("tsne", "sklearn", "--projection tsne needs scikit-learn: pip install scikit-learn"),
        ("umap", "umap", "--projection umap needs umap-learn: pip install umap-learn"),
    ],
)
def test_a_projection_without_its_package_says_how_to_install_it(
    run, npy_file, monkeypatch, projection, module, message
):
    monkeypatch.setitem(sys.modules, module, None)
    result = run(
        "encode", npy_file, "-m", "missing.safetensors", "-o", "z.npy", "--plot", "m.png", "--projection", projection
    )
    assert result.exit_code == 1
    assert result.stderr == f"Error: {message}\n"


def test_projection_names_and_needs_are_usage_errors(run, npy_file):
    result = run("encode", npy_file, "-m", "x.safetensors", "-o", "z.npy", "--plot", "m.png", "--projection", "mds")
    assert result.exit_code == 2
    assert result.stderr == "Error: unknown projection 'mds' (use pca, tsne, umap)\n"
    result = run("encode", npy_file, "-m", "x.safetensors", "-o", "z.npy", "--projection", "pca")
    assert result.exit_code == 2
    assert result.stderr == "Error: --projection needs --plot FILE\n"


def test_plot_into_a_missing_directory_fails_before_the_work(run, models, mvtec):
    result = run("score", mvtec, "-m", models["ae"], "--plot", "nowhere/hist.png")
    assert result.exit_code == 1
    assert result.stderr == "Error: cannot write nowhere/hist.png: directory nowhere does not exist\n"

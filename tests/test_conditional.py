"""A conditional VAE (--condition): trained on two shapes in two folders, it draws the shape asked for."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from aecli.cli import app

SIZE = 16


def shape(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A bright disc or square on black, a little moved and resized each time."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = SIZE / 2 - 0.5 + rng.uniform(-1, 1, 2)
    r = rng.uniform(5, 6)
    if kind == "circle":
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    else:
        inside = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
    return np.where(inside, 230, 10).astype(np.uint8)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    means = {}
    for kind in ("circle", "square"):
        (root / kind).mkdir()
        pictures = [shape(kind, rng) for _ in range(60)]
        for n, picture in enumerate(pictures):
            Image.fromarray(picture).save(root / kind / f"{n:02d}.png")
        means[kind] = np.mean(pictures, axis=0) / 255
    return root, means


@pytest.fixture(scope="module")
def cvae(shapes, tmp_path_factory):
    from typer.testing import CliRunner

    root, _ = shapes
    out = tmp_path_factory.mktemp("model") / "cvae.safetensors"
    args = ["train", str(root), "--variant", "vae", "--condition", "folders", "--latent-dim", "4", "--loss", "bce",
            "--widths", "16,32", "--epochs", "40", "--batch-size", "8", "--lr", "3e-3", "--device", "cpu",
            "--workers", "0", "-q", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def run(*args):
    from typer.testing import CliRunner

    return CliRunner().invoke(app, [str(a) for a in args])


def fill(picture: np.ndarray) -> float:
    """How much of its bounding box the bright shape fills: a disc about pi/4, a square 1."""
    bright = picture > 0.5
    ys, xs = np.nonzero(bright)
    return bright.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)) if len(ys) else 0.0


def test_samples_are_of_the_asked_class(cvae, tmp_path):
    """The same 16 latent draws (one seed), decoded as each class: every square is squarer than
    the circle from the same draw, and the circles fill their boxes as discs do."""
    filled = {}
    for kind in ("circle", "square"):
        out = tmp_path / kind
        result = run("sample", "-m", cvae, "--class", kind, "-n", 16, "-o", out, "--seed", 1, "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert f"class {kind}" in result.stderr
        samples = [np.asarray(Image.open(p), dtype=np.float64) / 255 for p in sorted(out.glob("*.png"))]
        filled[kind] = np.array([fill(s) for s in samples])
    assert len(filled["circle"]) == 16
    squarer = int((filled["square"] > filled["circle"]).sum())
    assert squarer >= 14, f"only {squarer}/16 square samples are squarer than their circles: {filled}"
    assert filled["circle"].mean() < 0.86 < filled["square"].mean(), filled


def test_class_all_draws_every_class_from_the_same_latents(cvae, tmp_path):
    result = run("sample", "-m", cvae, "--class", "all", "-n", 3, "-o", tmp_path / "all", "--seed", 2)
    assert result.exit_code == 0, result.output
    assert "6 samples" in result.stderr and "classes circle, square" in result.stderr
    both = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "all").glob("*.png"))]
    for k, kind in enumerate(("circle", "square")):  # class after class, each as drawn alone
        assert run("sample", "-m", cvae, "--class", kind, "-n", 3, "-o", tmp_path / kind, "--seed", 2).exit_code == 0
        alone = [np.asarray(Image.open(p)) for p in sorted((tmp_path / kind).glob("*.png"))]
        assert all(np.array_equal(a, b) for a, b in zip(alone, both[3 * k : 3 * k + 3]))


def test_classes_are_stored_and_shown(cvae):
    result = run("info", cvae, "--json")
    assert result.exit_code == 0
    details = json.loads(result.stdout)
    assert details["model_config"]["classes"] == ["circle", "square"]
    assert details["capabilities"]["classes"] == ["circle", "square"]
    assert "circle, square" in run("info", cvae).stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "conditional on its classes: give --class NAME (known: circle, square)"),
        (["--class", "triangle"], "unknown class 'triangle' (known: circle, square)"),
    ],
)
def test_sample_needs_a_known_class(cvae, tmp_path, extra, message):
    result = run("sample", "-m", cvae, "-n", 2, "--grid", tmp_path / "g.png", *extra)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_class_name_case_is_forgiven(cvae, tmp_path):
    assert run("sample", "-m", cvae, "-n", 2, "--grid", tmp_path / "g.png", "--class", "Circle").exit_code == 0


def test_encode_needs_the_labels(cvae, shapes, tmp_path):
    root, _ = shapes
    result = run("encode", root, "-m", cvae, "-o", tmp_path / "z.npy")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "give --labels folders, class or FILE.csv" in result.stderr
    result = run("encode", root, "-m", cvae, "-o", tmp_path / "z.npy", "--labels", "folders")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "z.npy").shape == (120, 4)


@pytest.mark.parametrize("command", ["score", "denoise", "calibrate", "decode"])
def test_commands_that_take_no_class_say_which_do(cvae, shapes, tmp_path, command):
    root, _ = shapes
    source = root
    if command == "decode":
        assert run("encode", root, "-m", cvae, "-o", tmp_path / "z.npy", "--labels", "folders").exit_code == 0
        source = tmp_path / "z.npy"
    result = run(command, source, "-m", cvae, "-o", tmp_path / ("out.safetensors" if command == "calibrate" else "out"))
    error = result.stderr.splitlines()[-1]  # denoise warns first that a VAE was not trained to denoise
    assert result.exit_code == 2 and error.startswith("Error: ") and result.stderr.count("Error: ") == 1
    assert "conditional on its classes" in error and "ae sample --class" in error


def test_csv_condition_and_unknown_class(shapes, tmp_path):
    from aecli.data import open_inputs
    from aecli.data.classes import class_labels

    root, _ = shapes
    images = open_inputs([str(root)])
    rows = ["path,class"] + [f"{images.relative(i)},{'round' if i < 60 else 'box'}" for i in range(len(images))]
    (tmp_path / "classes.csv").write_text("\n".join(rows))
    names, labels = class_labels(images, str(tmp_path / "classes.csv"))
    assert names == ["box", "round"] and labels[0] == 1 and labels[-1] == 0
    folders = class_labels(images, "folders", ["circle", "square"])[1]
    assert folders[:60].tolist() == [0] * 60 and folders[60:].tolist() == [1] * 60
    from aecli.errors import UsageError

    with pytest.raises(UsageError, match="class 'square' is not one of the model's \\(circle\\)"):
        class_labels(images, "folders", ["circle"])


def test_unconditional_models_are_unchanged():
    import torch

    from aecli.config import ModelConfig
    from aecli.models import create_model

    config = ModelConfig(variant="vae", channels=1, image_size=16, widths=[8, 16], latent_dim=4)
    plain = create_model(config)
    assert plain.capabilities.classes == ()
    conditional = create_model(config.replace(condition="folders", classes=["a", "b"]))
    assert set(plain.state_dict()) == set(conditional.state_dict())
    assert plain.state_dict()["net.encoder.0.weight"].shape[1] == 1
    assert conditional.state_dict()["net.encoder.0.weight"].shape[1] == 3
    with torch.no_grad():
        assert plain.encode(torch.rand(2, 1, 16, 16)).shape == (2, 4)


def test_classes_setting_from_flag_and_yaml(tmp_path):
    result = run("train", "--variant", "vae", "--condition", "folders", "--classes", "square,circle", "--print-config")
    assert result.exit_code == 0, result.output
    assert "classes:\n- square\n- circle\n" in result.stdout
    (tmp_path / "c.yaml").write_text("variant: vae\ncondition: folders\nclasses: [b, a]\n")
    assert "- b\n- a\n" in run("train", "--config", tmp_path / "c.yaml", "--print-config").stdout
    result = run("train", "--variant", "vae", "--condition", "folders", "--classes", "a,a", "--print-config")
    assert result.exit_code == 2 and "classes names one twice" in result.stderr


def test_classes_need_a_condition(shapes, tmp_path):
    root, _ = shapes
    result = run("train", root, "--variant", "vae", "--classes", "circle,square", "-o", tmp_path / "m.safetensors")
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: --classes names a conditional model's classes: it needs --condition too"

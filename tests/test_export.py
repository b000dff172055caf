"""`ae export` through the real CLI: each graph runs in onnxruntime alone and agrees with ae.

Parity is measured on the same uint8 batch on both sides: ae's own results come from the command
where it writes floats (`ae encode`, `ae score`'s verdicts) and from the library functions the
commands call where it writes PNGs (denoise, decode). Pixel-level outputs, latents and the
per-pixel mean metrics agree within 1e-5. Latent distances (and `combined`, built on them) are
quadratic forms whose precision matrix amplifies the float32 rounding of the latent (which itself
agrees within 1e-6): they agree within 3e-4 of max(1, |value|) (measured: 6e-5), and ae's own
latent scores move by up to 5e-3 between batch sizes of 1 and 256 on one CPU. The verdicts are
identical.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from aecli import infer  # noqa: E402
from aecli.cli import app  # noqa: E402
from aecli.data import ImageSet  # noqa: E402
from aecli.data.arrays import ArrayImages  # noqa: E402
from aecli.data.images import to_size  # noqa: E402
from aecli.export import pixels, targets  # noqa: E402
from aecli.scoring import maps  # noqa: E402
from aecli.scoring import scores as scoring  # noqa: E402
from tests.conftest import blobs, write_pngs  # noqa: E402

EXAMPLE = Path(__file__).parents[1] / "examples" / "onnx-score.py"
EXPECTED = {
    "ae": ["encode", "decode", "reconstruct", "score"],
    "vae": ["encode", "decode", "reconstruct", "score"],
    "dae": ["encode", "denoise", "score"],  # a unet: no decoder without its skip connections
    "fc": ["encode", "decode", "reconstruct", "score"],
    "geometric": ["encode", "decode", "reconstruct", "score"],  # its default metric sums three
    "draem": ["encode", "reconstruct", "score"],  # a unet whose anomaly map is its own
}
PIXEL_TOLERANCE = 1e-5  # images, latents, maps, and metrics that are means over pixels
RELATIVE_TOLERANCE = 3e-4  # latent distances and combined, of max(1, |value|): measured up to 6e-5
MEAN_METRICS = ("mse", "mae", "bce", "ssim")


def invoke(*args) -> object:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Every tiny model exported once: the session's ae, vae and dae, a fully convolutional ae, and
    a geometric and a draem model, whose scores have defaults and maps of their own."""
    root = tmp_path_factory.mktemp("onnx")
    np.save(root / "train.npy", blobs(32))
    paths = {**models, **{name: root / f"{name}.safetensors" for name in ("fc", "geometric", "draem")}}
    flags = ["--epochs", "1", "--batch-size", "8", "-q"]
    invoke("train", root / "train.npy", "--no-bottleneck", *flags, "-o", paths["fc"])
    for variant in ("geometric", "draem"):
        invoke("train", root / "train.npy", "--variant", variant, *flags, "-o", paths[variant])
    files = {}
    for name, model in paths.items():
        result = invoke("export", "-m", model, "-o", root / f"{name}.onnx")
        files[name] = {Path(line).name.split(".")[1]: Path(line) for line in result.stdout.splitlines()}
        files[name]["model"] = model
    return files


def session(path: Path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_graph(path: Path, feed: np.ndarray) -> dict[str, np.ndarray]:
    s = session(path)
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {s.get_inputs()[0].name: feed})))


def metadata(path: Path) -> dict[str, str]:
    return session(path).get_modelmeta().custom_metadata_map


def images_of(batch: np.ndarray) -> ImageSet:
    return ImageSet([ArrayImages("batch", batch, True)], "batch")


def loaded(exported, name: str) -> infer.Loaded:
    return infer.load_model(exported[name]["model"], "cpu")


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    """One uint8 batch (N, 16, 16, 1): normal discs and two noise images, anomalies."""
    noise = (np.random.default_rng(0).random((2, 16, 16)) * 255).astype(np.uint8)
    return np.concatenate([blobs(10, seed=11), noise])[..., None]


def largest(got: np.ndarray, want: np.ndarray, relative: bool = False) -> float:
    diff = np.abs(got.astype(np.float64) - want)
    return float((diff / np.maximum(1.0, np.abs(want)) if relative else diff).max())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_one_file_per_function_the_model_has_with_its_config_in_the_metadata(exported, name):
    files = exported[name]
    assert [f for f in files if f != "model"] == EXPECTED[name]
    model = loaded(exported, name)
    for function in EXPECTED[name]:
        assert files[function].name == f"{name}.{function}.onnx"
        meta = metadata(files[function])
        assert meta["aecli_function"] == function
        assert json.loads(meta["model_config"]) == model.config.as_dict()
        graph = onnx.load(str(files[function]))
        if function != "decode":  # uint8 pixels, channels last, every dimension free
            (given,) = graph.graph.input
            assert given.name == "pixels" and given.type.tensor_type.elem_type == onnx.TensorProto.UINT8
            assert [d.dim_param for d in given.type.tensor_type.shape.dim] == ["batch", "height", "width", "channels"]


@pytest.mark.parametrize("name", ["ae", "vae", "dae", "fc"])
def test_encode_matches_ae_encode(exported, name, batch, tmp_path):
    np.save(tmp_path / "batch.npy", batch)
    invoke("encode", tmp_path / "batch.npy", "-m", exported[name]["model"], "-o", tmp_path / "z.npy", "-q")
    got = run_graph(exported[name]["encode"], batch)["latent"]
    assert got.dtype == np.float32 and got.shape[0] == len(batch)
    assert largest(run_graph(exported[name]["encode"], batch[:1])["latent"], got[:1]) <= PIXEL_TOLERANCE  # batch of 1
    assert largest(got, np.load(tmp_path / "z.npy")) <= PIXEL_TOLERANCE  # rows as ae encode writes them


@pytest.mark.parametrize("name", ["ae", "vae", "fc"])
def test_decode_matches_ae_decode(exported, name, batch):
    model = loaded(exported, name)
    z = infer.encode(model, images_of(batch), workers=0).vectors
    want = np.concatenate([x.numpy() for x in infer.decode(model, z)]).transpose(0, 2, 3, 1)
    assert largest(run_graph(exported[name]["decode"], z)["image"], want) <= PIXEL_TOLERANCE


@pytest.mark.parametrize("name", ["ae", "vae", "dae"])
def test_reconstruction_matches_ae_denoise(exported, name, batch):
    function = "denoise" if name == "dae" else "reconstruct"
    done = infer.denoise(loaded(exported, name), images_of(batch), whole=True, workers=0)
    want = np.stack([d.clean.numpy() for d in done]).transpose(0, 2, 3, 1)
    assert largest(run_graph(exported[name][function], batch)["image"], want) <= PIXEL_TOLERANCE


@pytest.mark.parametrize("name", ["ae", "vae", "dae", "fc", "geometric", "draem"])
def test_scores_maps_and_verdicts_match_ae_score(exported, name, batch, tmp_path):
    model = loaded(exported, name)
    got = run_graph(exported[name]["score"], batch)
    want = scoring.score(model, images_of(batch), workers=0).values
    meta = metadata(exported[name]["score"])
    assert sorted(json.loads(meta["metrics"])) == sorted(want)
    for metric, values in want.items():
        relative = metric not in MEAN_METRICS
        assert largest(got[metric], values, relative) <= (RELATIVE_TOLERANCE if relative else PIXEL_TOLERANCE), metric
    (part, _, recon), *_ = scoring.score_batches(model, images_of(batch), workers=0)
    drawn = np.stack([maps.anomaly_map(model, x, r).numpy() for x, r in zip(part.pixels, recon)])  # ae score --maps
    assert largest(got["map"], drawn) <= PIXEL_TOLERANCE
    assert largest(got["reconstruction"], recon.permute(0, 2, 3, 1).numpy()) <= PIXEL_TOLERANCE

    np.save(tmp_path / "batch.npy", batch)
    csv = invoke("score", tmp_path / "batch.npy", "-m", exported[name]["model"], "--format", "csv", "-q").stdout
    rows = [line.split(",") for line in csv.splitlines()[1:]]
    default = model.capabilities.default_metric or "combined"
    assert meta["default_metric"] == default
    assert json.loads(meta["thresholds"])[default] == float(rows[0][2])  # the same threshold, to its digits
    assert got["anomalous"].tolist() == [r[3] == "true" for r in rows]
    if name not in ("geometric", "draem"):  # trained for one epoch, these may flag all or none
        assert 0 < got["anomalous"].sum() < len(batch)  # the verdicts are not all alike


def test_a_fully_convolutional_model_denoises_at_any_size(exported):
    model = loaded(exported, "fc")
    graph = exported["fc"]["reconstruct"]
    assert metadata(graph)["fit"] == "none"
    for h, w in ((16, 16), (24, 40), (21, 13)):  # sides that are and are not multiples of 2**stages
        batch = np.stack([to_u8(blobs(1, size=max(h, w), seed=s)[0, :h, :w]) for s in range(3)])[..., None]
        done = infer.denoise(model, images_of(batch), workers=0)
        want = np.stack([d.clean.numpy() for d in done]).transpose(0, 2, 3, 1)
        got = run_graph(graph, batch)["image"]
        assert got.shape == (3, h, w, 1)
        assert largest(got, want) <= PIXEL_TOLERANCE
    z = run_graph(exported["fc"]["encode"], batch)["latent"]  # encode fits to the model's size, as ae encode
    assert z.shape == (3, math.prod(model.capabilities.latent_shape))


def to_u8(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.uint8)


@pytest.mark.parametrize("channels", [3, 4])
def test_colour_images_through_a_grey_model_as_ae_takes_them(exported, channels, tmp_path):
    rgb = to_u8(blobs(4, size=20, channels=3, seed=5)[:, :, :13])  # another shape and colour: fitted, made grey
    batch = np.concatenate([rgb, np.full((*rgb.shape[:3], 1), 200, np.uint8)], axis=3) if channels == 4 else rgb
    model = loaded(exported, "ae")
    got = run_graph(exported["ae"]["score"], batch)
    want = scoring.score(model, images_of(batch), workers=0).values
    assert largest(got["mse"], want["mse"]) <= PIXEL_TOLERANCE
    assert largest(got["combined"], want["combined"], relative=True) <= RELATIVE_TOLERANCE
    done = infer.denoise(model, images_of(batch), whole=True, workers=0)  # colour back, channel by channel
    image = run_graph(exported["ae"]["reconstruct"], batch)["image"]
    assert image.shape == (4, 16, 10, 3)  # fitted as ae denoise --whole fits it, the padding cut off, colour kept
    assert largest(image, np.stack([d.clean.numpy() for d in done]).transpose(0, 2, 3, 1)) <= PIXEL_TOLERANCE


@pytest.mark.parametrize("mode", ["pad", "crop", "stretch"])
@pytest.mark.parametrize("shape", [(16, 16), (30, 45), (45, 30), (9, 16), (7, 5), (1, 40), (33, 16)])
def test_images_are_fitted_in_the_graph_as_ae_fits_them(mode, shape):
    g = pixels.Nodes("fit")
    fitted, _ = pixels.fit(g, "x", 16, mode)
    g.op("Identity", fitted, out="y")
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        g.nodes, "fit", [value("x", onnx.TensorProto.FLOAT, None)], [value("y", onnx.TensorProto.FLOAT, None)],
        g.initializers,
    )  # fmt: skip
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    x = np.random.default_rng(1).integers(0, 256, (2, 3, *shape)).astype(np.float32) / 255
    got = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    import torch

    want = to_size(torch.from_numpy(x), 16, mode).numpy()
    assert got.shape == want.shape == (2, 3, 16, 16)
    assert largest(got, want) <= PIXEL_TOLERANCE


def test_the_example_scores_a_folder_as_ae_score_does_without_aecli_or_torch(exported, tmp_path):
    folder = tmp_path / "incoming"
    write_pngs(folder / "good", blobs(5, seed=11))
    write_pngs(folder / "odd", (np.random.default_rng(2).random((2, 16, 16)) * 255).astype(np.uint8))
    write_pngs(folder, blobs(2, size=24, channels=3, seed=3), prefix="colour")  # fitted and turned grey
    model, graph = exported["ae"]["model"], exported["ae"]["score"]
    ae = invoke("score", folder, "-m", model, "--format", "csv", "-q").stdout.splitlines()
    check = (  # the script as `python examples/onnx-score.py`, then proof that it needed neither
        "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
        "assert not {'torch', 'aecli'} & set(sys.modules), 'imported torch or aecli'"
    )
    done = subprocess.run(
        [sys.executable, "-c", check, str(EXAMPLE), str(folder), str(graph)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    ours = done.stdout.splitlines()
    assert ours[0] == ae[0] == "path,score,threshold,anomalous"
    assert len(ours) == len(ae) == 10
    for mine, theirs in zip(ours[1:], ae[1:]):
        (path, score, threshold, flag), (path2, score2, threshold2, flag2) = mine.split(","), theirs.split(",")
        assert (path, threshold, flag) == (path2, threshold2, flag2)
        assert abs(float(score) - float(score2)) <= RELATIVE_TOLERANCE * max(1.0, abs(float(score2)))
    assert {line.split(",")[3] for line in ours[1:]} == {"true", "false"}


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_without_the_extra_export_fails_at_once_with_the_install_line(run, models, monkeypatch, missing, tmp_path):
    monkeypatch.setitem(sys.modules, missing, None)
    result = run("export", "-m", models["ae"], "-o", "m.onnx")
    assert result.exit_code == 1
    assert result.stderr == "Error: ae export needs onnx, onnxscript and onnxruntime: pip install 'aecli[onnx]'\n"
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_other_files_and_names_that_are_not_onnx(run, models, tmp_path):
    (tmp_path / "m.score.onnx").write_text("my notes\n")
    result = run("export", "-m", models["ae"], "-o", "m.onnx")
    assert result.exit_code == 1
    assert result.stderr == "Error: refusing to overwrite m.score.onnx: it is not an ONNX file written by ae export\n"
    assert (tmp_path / "m.score.onnx").read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.score.onnx"]
    result = run("export", "-m", models["ae"], "-o", "m.safetensors")
    assert result.exit_code == 2 and "ending in .onnx" in result.stderr


def test_an_earlier_export_may_be_replaced(exported):
    files = exported["ae"]
    names = [f for f in files if f != "model"]
    assert targets(files["model"], files["encode"].parent / "ae.onnx", names) == {n: files[n] for n in names}

"""Small local defects found and located (`--variant draem`), and pixel AUROC and PRO against
hand-computed cases: one model trained once on a generated texture, scored through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aecli.scoring import metrics
from aecli.scoring.pixel_metrics import pixel_auroc, pro_curve, pro_score, regions
from tests.conftest import write_pngs


def texture(n: int, size: int, seed: int, width: int | None = None) -> np.ndarray:
    """n grey (N, H, W) floats of a woven pattern with grain: what a plain autoencoder reconstructs well."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, : width or size]
    out = []
    for _ in range(n):
        phase = rng.uniform(0, 2 * np.pi, 2)
        weave = 0.5 + 0.2 * np.sin(xx * 0.8 + phase[0]) + 0.15 * np.sin(yy * 0.55 + phase[1])
        out.append(np.clip(weave + 0.05 * rng.standard_normal(weave.shape), 0, 1))
    return np.stack(out)


def scratch(image: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """The image with a bright 10-pixel diagonal scratch somewhere in its middle, and where it is."""
    image, mask = image.copy(), np.zeros(image.shape, bool)
    y, x = rng.integers(image.shape[0] // 4, 3 * image.shape[0] // 4, 2)
    for k in range(10):
        mask[y + k // 3, x + k] = True
    image[mask] = 1.0
    return image, mask


def to_u8(images: np.ndarray) -> np.ndarray:
    return (np.asarray(images) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def inspected(tmp_path_factory):
    """A draem model trained on 16x16 patches of good texture, and an MVTec-style test set."""
    from typer.testing import CliRunner

    from aecli.cli import app

    root = tmp_path_factory.mktemp("defects")
    write_pngs(root / "good", to_u8(texture(16, 48, seed=0)))
    write_pngs(root / "test" / "good", to_u8(texture(4, 48, seed=1)))
    rng = np.random.default_rng(2)
    planted = [scratch(t, rng) for t in texture(4, 48, seed=3)]
    write_pngs(root / "test" / "scratch", to_u8([image for image, _ in planted]))
    (root / "ground_truth" / "scratch").mkdir(parents=True)
    for i, (_, mask) in enumerate(planted):
        Image.fromarray(to_u8(mask)).save(root / "ground_truth" / "scratch" / f"img{i:03d}_mask.png")
    large, large_mask = scratch(texture(1, 160, seed=5, width=200)[0], rng)
    write_pngs(root / "large", to_u8(large[None]))
    model = root / "draem.safetensors"
    args = ["train", root / "good", "--variant", "draem", "--patch-size", "16", "--epochs", "30", "-o", model, "-q"]
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return {"root": root, "model": model, "masks": [m for _, m in planted], "large_mask": large_mask}


def test_a_planted_scratch_is_found_located_and_measured_against_its_mask(run, inspected):
    root = inspected["root"]
    result = run("score", root / "test", "-m", inspected["model"], "--labels", "folders", "--format", "json")
    assert result.exit_code == 0, result.stderr
    import json

    rows = json.loads(result.stdout)
    good = [r["score"] for r in rows if r["label"] == 0]
    bad = [r["score"] for r in rows if r["label"] == 1]
    assert min(bad) > max(good)
    assert "segmentation threshold" in result.stderr and "calibration" in result.stderr  # its default metric, auto
    assert "unet" not in result.stderr  # the reconstruction metrics' warning does not concern it
    line = next(line for line in result.stderr.splitlines() if line.startswith("masks:"))
    assert "4 defect regions in 8 images" in line
    assert float(line.split("pixel AUROC ")[1].split(",")[0]) > 0.95
    assert float(line.split("PRO (to 30% FPR) ")[1]) > 0.5


def test_the_maps_maximum_lies_on_the_scratch(inspected):
    from aecli import infer
    from aecli.data import open_inputs
    from aecli.scoring.maps import anomaly_map
    from aecli.scoring.scores import score_batches

    loaded = infer.load_model(inspected["model"], "cpu")
    images = open_inputs([str(inspected["root"] / "test" / "scratch"), str(inspected["root"] / "large")])
    masks = [*inspected["masks"], inspected["large_mask"]]
    for batch, _, recon in score_batches(loaded, images, workers=0):  # in tiles, as the model was trained on patches
        for x, r, i in zip(batch.pixels, recon, batch.index.tolist()):
            heat = anomaly_map(loaded, x, r).numpy()
            assert heat.shape == masks[i].shape  # at the image's own size
            y, c = np.unravel_index(heat.argmax(), heat.shape)
            assert np.pad(masks[i], 1)[y : y + 3, c : c + 3].any(), (i, (y, c))  # on it, or a pixel from it


def test_maps_of_an_image_larger_than_the_model_are_stitched_at_full_size(run, inspected):
    result = run("score", inspected["root"] / "large", "-m", inspected["model"], "--maps", "maps", "--maps-all")
    assert result.exit_code == 0, result.stderr
    panel = np.asarray(Image.open("maps/img000.png"))
    assert panel.shape[:2] == (160, 3 * 200 + 8)  # input, reconstruction, map: never resized to 16x16


def test_a_missing_anomaly_source_is_a_one_line_error(run, tmp_path):
    write_pngs(tmp_path / "good", to_u8(texture(2, 16, seed=0)))
    result = run("train", "good", "--variant", "draem", "--anomaly-source", "nowhere", "--epochs", "1", "-o", "m.st")
    assert result.exit_code == 1
    assert "--anomaly-source nowhere: not a folder of images" in result.stderr


def test_foreign_texture_may_come_from_a_folder(run, tmp_path):
    write_pngs(tmp_path / "good", to_u8(texture(4, 16, seed=0)))
    write_pngs(tmp_path / "textures", to_u8(texture(2, 8, seed=9)))  # smaller than the images: scaled up
    args = ["--anomaly-source", "textures", "--epochs", "1", "--batch-size", "2", "-o", "m.safetensors", "-q"]
    result = run("train", "good", "--variant", "draem", *args)
    assert result.exit_code == 0, result.stderr
    result = run("info", "m.safetensors")
    assert "textures" in result.stdout + result.stderr


def test_pro_and_pixel_auroc_against_hand_computed_cases():
    # one region of 2 pixels, 2 normal ones: (fpr, overlap) goes (0,0) (0,.5) (.5,.5) (.5,1) (1,1)
    scores, mask = np.array([0.9, 0.2, 0.5, 0.1]), np.array([1, 1, 0, 0])
    assert pro_score(scores, mask) == pytest.approx(0.5)  # 0.5 over [0, 0.3], over 0.3
    assert pro_score(scores, mask, limit=1.0) == pytest.approx(0.75)
    assert pixel_auroc(scores, mask) == pytest.approx(0.75)  # 3 of the 4 pairs in order
    # a 1-pixel region and a 3-pixel one count alike: flagging the small one is half the overlap
    scores = np.array([0.9, 0.1, 0.8, 0.3, 0.2, 0.4])
    ids = regions(np.array([[1, 0, 1, 1, 1, 0]]))
    assert ids.tolist() == [[1, 0, 2, 2, 2, 0]]
    fpr, overlap = pro_curve(scores, ids)
    assert fpr.tolist() == pytest.approx([0, 0, 0, 0.5, 0.5, 0.5, 1])
    assert overlap.tolist() == pytest.approx([0, 1 / 2, 2 / 3, 2 / 3, 5 / 6, 1, 1])
    assert pro_score(scores, ids) == pytest.approx(2 / 3)  # 0.3 x 2/3, over 0.3
    assert pro_score(scores, ids, limit=1.0) == pytest.approx(0.5 * 2 / 3 + 0.5 * 1)


def test_regions_join_diagonal_neighbours_and_pixel_auroc_matches_the_reference():
    mask = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1]], bool)
    assert regions(mask).tolist() == [[1, 0, 0, 2], [0, 1, 0, 2], [0, 0, 0, 0], [3, 3, 0, 4]]
    rng = np.random.default_rng(0)
    scores, labels = rng.random(400).round(2), rng.random(400) < 0.3  # many ties
    assert pixel_auroc(scores, labels) == pytest.approx(metrics.auroc(scores, labels))


def test_masks_are_found_in_mvtec_layout_and_only_when_every_anomalous_image_has_one(mvtec):
    from aecli.data import open_inputs
    from aecli.scoring.pixel_metrics import find_masks

    images = open_inputs([str(mvtec)])  # test/good and test/noise, no ground_truth/ yet
    truth = np.array([0] * 6 + [1] * 2)
    assert find_masks(images, truth) is None
    (mvtec.parent / "ground_truth" / "noise").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(mvtec.parent / "ground_truth" / "noise" / "img000_mask.png")
    assert find_masks(images, truth) is None  # img001 has none: pixel metrics would leave it out
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(mvtec.parent / "ground_truth" / "noise" / "img001_mask.png")
    found = find_masks(images, truth)
    assert found[:6] == [None] * 6 and [p.name for p in found[6:]] == ["img000_mask.png", "img001_mask.png"]

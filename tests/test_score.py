"""`ae score` and `ae calibrate` through the real CLI; thresholds and metrics against hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from aecli.scoring import metrics
from aecli.io import modelfile
from aecli.scoring import thresholds
from aecli.errors import UsageError
from tests.conftest import blobs, write_pngs


def _rows(text: str) -> list[dict[str, str]]:
    lines = text.strip().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]


def test_an_obvious_anomaly_scores_higher_than_every_normal_image(run, models, mvtec):
    result = run("score", mvtec, "-m", models["ae"], "--labels", "folders")
    assert result.exit_code == 0, result.stderr
    rows = _rows(result.stdout)  # not a terminal: CSV
    assert [r["path"].split("/")[-2] for r in rows] == ["good"] * 6 + ["noise"] * 2  # input order
    normal = [float(r["score"]) for r in rows if r["label"] == "0"]
    odd = [float(r["score"]) for r in rows if r["label"] == "1"]
    assert min(odd) > max(normal)
    assert all(r["anomalous"] == "true" for r in rows if r["label"] == "1")
    assert "AUROC 1.0000" in result.stderr and "best F1 1.0000" in result.stderr


def test_class_folders_given_one_by_one_label_their_images(run, models, mvtec):
    """`ae score test/* --labels folders`, the shell's expansion, was refused: no folder below them."""
    result = run("score", mvtec / "good", mvtec / "noise", "-m", models["ae"], "--labels", "folders")
    assert result.exit_code == 0, result.stderr
    assert [r["label"] for r in _rows(result.stdout)] == ["0"] * 6 + ["1"] * 2
    result = run("score", mvtec / "good", "-m", models["ae"], "--labels", "folders")  # one folder: no classes
    assert result.exit_code == 2 and "not inside a folder below an input directory" in result.stderr


def test_labelled_normal_images_far_above_the_calibrated_rate_say_the_calibration_does_not_fit(run, models, tmp_path):
    shifted = 255 - blobs(24, seed=5)  # the normal discs, under another light
    write_pngs(tmp_path / "site2" / "good", shifted)
    write_pngs(tmp_path / "site2" / "noise", (np.random.default_rng(0).random((2, 16, 16)) * 255).astype(np.uint8))
    write_pngs(tmp_path / "site1" / "good", blobs(24, seed=6))
    write_pngs(tmp_path / "site1" / "noise", (np.random.default_rng(1).random((2, 16, 16)) * 255).astype(np.uint8))
    result = run("score", tmp_path / "site2", "-m", models["ae"], "--metric", "mse", "--labels", "folders")
    assert result.exit_code == 0, result.stderr
    assert "(normal flagged 100.0%)" in result.stderr
    assert "flags 100% of the normal images here, against 0.01" in result.stderr and "ae calibrate" in result.stderr
    like_training = run("score", tmp_path / "site1", "-m", models["ae"], "--metric", "mse", "--labels", "folders")
    assert "normal flagged" in like_training.stderr and "of the normal images here" not in like_training.stderr
    assert "of the normal images here" not in run("score", tmp_path / "site2", "-m", models["ae"]).stderr  # no labels


def test_auto_threshold_comes_from_the_model_files_calibration(run, models, mvtec):
    result = run("score", mvtec, "-m", models["ae"], "--metric", "mse", "--fpr", "0.05", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    quantiles = modelfile.load(models["ae"]).calibration["metrics"]["mse"]["quantiles"]
    assert records[0]["threshold"] == pytest.approx(np.interp(0.95, np.linspace(0, 1, 1001), quantiles), rel=1e-6)
    assert "false-positive rate 0.05" in result.stderr and "calibration" in result.stderr


def test_without_calibration_auto_falls_back_to_median_and_mad_and_says_so(run, models, mvtec, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(models["ae"], framework="pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != "calibration"}
        save_file({k: f.get_tensor(k) for k in f.keys()}, tmp_path / "bare.safetensors", metadata=metadata)  # noqa: SIM118
    result = run("score", mvtec, "-m", tmp_path / "bare.safetensors", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert "without calibration" in result.stderr and "MAD" in result.stderr
    scores = np.array([r["score"] for r in json.loads(result.stdout)])
    median, mad = np.median(scores), np.median(np.abs(scores - np.median(scores)))
    assert json.loads(result.stdout)[0]["threshold"] == pytest.approx(median + 2.3263 * 1.4826 * mad, rel=1e-3)


@pytest.mark.parametrize(
    "flags, flagged",
    [
        (["--threshold", "1e9"], 0),
        (["--threshold=-1e9"], 8),
        (["--threshold", "p75"], 2),
        (["--contamination", "0.25"], 2),
    ],
)
def test_threshold_modes(run, models, mvtec, flags, flagged):
    result = run("score", mvtec, "-m", models["ae"], *flags)
    assert result.exit_code == 0, result.stderr
    assert sum(r["anomalous"] == "true" for r in _rows(result.stdout)) == flagged
    assert f"flagged {flagged} of 8" in result.stderr


def test_fail_on_anomaly_exits_3_only_when_something_is_flagged(run, models, mvtec):
    assert run("score", mvtec, "-m", models["ae"], "--contamination", "0.25", "--fail-on-anomaly", "-q").exit_code == 3
    assert run("score", mvtec, "-m", models["ae"], "--threshold", "1e9", "--fail-on-anomaly", "-q").exit_code == 0


def test_output_file_top_k_and_table(run, models, mvtec, tmp_path):
    result = run("score", mvtec, "-m", models["ae"], "--top", "2", "-o", "top.csv", "-q")
    assert result.exit_code == 0 and result.stdout == ""
    rows = _rows((tmp_path / "top.csv").read_text())
    assert len(rows) == 2 and all("/noise/" in r["path"] for r in rows)
    assert float(rows[0]["score"]) >= float(rows[1]["score"])
    table = run("score", mvtec, "-m", models["ae"], "--format", "table", "-q")
    assert table.exit_code == 0 and "score" in table.stdout and "anomalous" in table.stdout


def test_maps_are_written_for_flagged_images_mirroring_paths(run, models, mvtec, tmp_path):
    result = run("score", mvtec, "-m", models["ae"], "--contamination", "0.25", "--maps", "maps", "-q")
    assert result.exit_code == 0, result.stderr
    written = sorted(p.relative_to(tmp_path / "maps").as_posix() for p in (tmp_path / "maps").rglob("*.png"))
    assert written == ["noise/img000.png", "noise/img001.png"]
    panel = Image.open(tmp_path / "maps" / "noise" / "img000.png")
    assert panel.mode == "RGB" and panel.size[0] > 3 * panel.size[1]  # input | reconstruction | heat
    assert run("score", mvtec, "-m", models["ae"], "--maps", "all", "--maps-all", "-q").exit_code == 0
    assert len(list((tmp_path / "all").rglob("*.png"))) == 8


def test_labels_from_a_csv_and_from_dataset_classes(run, models, mvtec, tmp_path):
    lines = ["path,label"] + [
        f"{p},{'anomaly' if 'noise' in str(p) else 'normal'}" for p in sorted(mvtec.rglob("*.png"))
    ]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    result = run("score", mvtec, "-m", models["ae"], "--labels", "labels.csv", "-q")
    assert result.exit_code == 0, result.stderr
    assert "AUROC 1.0000" in result.stderr
    images = np.concatenate([blobs(6, seed=3), (np.random.default_rng(1).random((3, 16, 16)) * 255).astype(np.uint8)])
    np.savez(tmp_path / "set.npz", images=images, labels=np.array([4] * 6 + [7] * 3))
    result = run("score", "set.npz", "-m", models["ae"], "--labels", "class=4")
    assert result.exit_code == 0 and "6 normal, 3 anomalous" in result.stderr


def test_every_metric_runs_and_elbo_needs_a_vae(run, models, mvtec):
    for metric in ("mse", "mae", "bce", "ssim", "latent", "combined"):
        result = run("score", mvtec, "-m", models["ae"], "--metric", metric, "--labels", "folders", "-q")
        assert result.exit_code == 0, (metric, result.stderr)
    assert run("score", mvtec, "-m", models["vae"], "--metric", "elbo", "-q").exit_code == 0
    result = run("score", mvtec, "-m", models["ae"], "--metric", "elbo")
    assert result.exit_code == 2 and "needs a model trained with --variant vae" in result.stderr


@pytest.mark.parametrize(
    "flags, code, message",
    [
        (["--metric", "nope"], 2, "unknown metric"),
        (["--threshold", "high"], 2, "use auto, a number"),
        (["--threshold", "p101"], 2, "p0 to p100"),
        (["--contamination", "1.5"], 2, "between 0 and 1"),
        (["--maps-all"], 2, "--maps-all needs --maps"),
        (["--format", "xml"], 2, "unknown format"),
        (["--labels", "missing.csv"], 1, "missing.csv"),
    ],
)
def test_score_errors_are_one_line(run, models, mvtec, flags, code, message):
    result = run("score", mvtec, "-m", models["ae"], *flags)
    assert result.exit_code == code and message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_labels_folders_needs_folders(run, models, mvtec):
    result = run("score", mvtec / "good" / "img000.png", "-m", models["ae"], "--labels", "folders")
    assert result.exit_code == 2 and "not inside a folder" in result.stderr


def test_calibrate_rewrites_the_calibration_and_nothing_else(run, models, mvtec, tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes(models["ae"].read_bytes())
    before = modelfile.load(model)
    result = run("calibrate", mvtec / "good", "-m", model, "-o", "copy.safetensors")
    assert result.exit_code == 0, result.stderr
    assert model.read_bytes() == models["ae"].read_bytes()  # -o leaves the original alone
    assert run("calibrate", mvtec / "good", "-m", model, "-q").exit_code == 0
    after = modelfile.load(model)
    assert after.calibration["metrics"]["mse"]["n"] == 6 and after.calibration["split"] == "calibration"
    assert after.training == before.training and after.latent_stats == before.latent_stats
    for k, v in before.model.state_dict().items():
        assert (after.model.state_dict()[k] == v).all()
    # the new calibration drives auto: at fpr 0.001 only the highest of its own 6 images can exceed it
    result = run("score", mvtec / "good", "-m", model, "--fpr", "0.001")
    assert sum(r["anomalous"] == "true" for r in _rows(result.stdout)) <= 1
    assert "on 6 calibration images" in result.stderr


def test_calibrate_refuses_to_overwrite_a_file_that_is_not_a_model(run, models, mvtec, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    result = run("calibrate", mvtec, "-m", models["ae"], "-o", "notes.txt")
    assert result.exit_code == 1 and (tmp_path / "notes.txt").read_text() == "keep me"


# hand-computed cases for our own metrics


def test_auroc_counts_ties_as_half():
    assert metrics.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert metrics.auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    assert metrics.auroc([1, 2, 3], [0, 1, 1]) == 1.0
    assert metrics.auroc([1, 2, 2], [0, 0, 1]) == 0.75  # pairs: (1<2) right, (2=2) half


def test_average_precision_steps_through_distinct_scores():
    # ranked: 0.8(+) 0.4(-) 0.35(+) 0.1(-): precision 1 at recall .5, 2/3 at recall 1
    assert metrics.average_precision([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a tie between a positive and a negative counts as one point: precision 1/2 at recall 1
    assert metrics.average_precision([0.5, 0.5], [0, 1]) == pytest.approx(0.5)


def test_f1_at_a_threshold_and_the_best_threshold():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert metrics.f1_at(scores, labels, 0.5) == pytest.approx(2 / 3)  # flags 0.8 only: P 1, R .5
    best, at = metrics.best_f1(scores, labels)
    assert best == pytest.approx(0.8) and 0.1 < at < 0.35  # flags 0.8, 0.4, 0.35: P 2/3, R 1
    assert metrics.f1_at(scores, labels, at) == pytest.approx(best)
    with pytest.raises(UsageError):
        metrics.auroc([1, 2], [0, 0])


def test_threshold_rules_by_hand():
    scores = np.arange(1, 101, dtype=float)  # 1..100
    assert thresholds.choose("p90", scores, "mse", None).value == pytest.approx(90.1)
    flagged = scores > thresholds.choose("auto", scores, "mse", None, contamination=0.05).value
    assert flagged.sum() == 5 and flagged[-5:].all()
    calibration = {"split": "validation", "metrics": {"mse": {"n": 10, "quantiles": np.linspace(0, 10, 1001).tolist()}}}
    assert thresholds.choose("auto", scores, "mse", calibration, fpr=0.1).value == pytest.approx(9.0)
    assert thresholds.parse("0.5") == 0.5 and thresholds.parse("P95") == "p95"


def test_an_unreadable_image_stops_scoring_unless_skipped(run, models, mvtec):
    (mvtec / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = run("score", mvtec, "-m", models["ae"], "-o", "s.csv")
    assert result.exit_code == 1 and "broken.png" in result.stderr
    result = run("score", mvtec, "-m", models["ae"], "--skip-bad")
    assert result.exit_code == 0 and "1 unreadable image(s) skipped" in result.stderr
    assert len(_rows(result.stdout)) == 8


def test_the_default_metric_is_combined_and_falls_back_to_mse_without_latent_statistics(run, models, mvtec, tmp_path):
    result = run("score", mvtec, "-m", models["ae"], "-q", "--format", "json")
    default = json.loads(result.stdout)
    explicit = json.loads(run("score", mvtec, "-m", models["ae"], "--metric", "combined", "--format", "json").stdout)
    assert default == explicit
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(models["ae"], framework="pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != "latent_stats"}
        save_file({k: f.get_tensor(k) for k in f.keys()}, tmp_path / "nolat.safetensors", metadata=metadata)  # noqa: SIM118
    result = run("score", mvtec, "-m", tmp_path / "nolat.safetensors")
    assert result.exit_code == 0 and result.stderr.startswith("mse threshold")


def test_scores_and_decisions_do_not_depend_on_autocast(run, tmp_path, monkeypatch):
    """bf16 autocast on the CPU stands in for CUDA's: calibration and scores must not move with it."""
    import contextlib

    import torch

    assert run("train", "sample:class=7", "--epochs", "2", "-q", "-o", "s.safetensors").exit_code == 0
    plain = run("score", "sample:test", "-m", "s.safetensors", "--metric", "latent", "--format", "csv", "-q")
    monkeypatch.setattr("aecli.runtime.autocast", lambda device: torch.autocast("cpu", dtype=torch.bfloat16))
    bf16 = run("score", "sample:test", "-m", "s.safetensors", "--metric", "latent", "--format", "csv", "-q")
    monkeypatch.setattr("aecli.runtime.autocast", lambda device: contextlib.nullcontext())
    assert plain.exit_code == bf16.exit_code == 0
    assert plain.stdout == bf16.stdout  # every score and decision, to the printed digit


def test_a_threshold_on_too_few_calibration_images_says_so(run, models, tmp_path):
    np.save(tmp_path / "x.npy", blobs(4))
    result = run("score", "x.npy", "-m", models["ae"], "--metric", "mse", "--fpr", "0.01")
    n = modelfile.load(models["ae"]).calibration["metrics"]["mse"]["n"]
    assert result.exit_code == 0
    assert f"Warning: --fpr 0.01 on {n} calibration images: the threshold rests on the top 1" in result.stderr
    assert f"steps of {1 / n:.2g}" in result.stderr
    assert f"{n} images: --fpr resolves in steps of {1 / n:.2g}" in " ".join(run("info", models["ae"]).stdout.split())


def test_a_patch_model_scores_larger_images_in_tiles_at_their_own_resolution(run, tmp_path):
    import torch

    from aecli import infer
    from aecli.data.images import read_image
    from tests.conftest import write_pngs

    write_pngs(tmp_path / "big", blobs(12, size=48, seed=1))
    args = ["--patch-size", "16", "--patches-per-image", "8", "--val-split", "0.25", "--epochs", "1", "-q"]
    assert run("train", "big", *args, "-o", "p.safetensors").exit_code == 0
    loaded = infer.load_model(tmp_path / "p.safetensors", "cpu")
    assert loaded.file.calibration["metrics"]["mse"]["n"] == 3  # whole held-out images, scored as below

    common = ["score", "big", "-m", "p.safetensors", "--metric", "mse", "--format", "csv"]
    tiled = run(*common, "--maps", "maps", "--maps-all")
    rows = [line.split(",") for line in tiled.stdout.splitlines()[1:]]
    assert tiled.exit_code == 0 and len(rows) == 12
    with torch.no_grad():
        for path, score, *_ in rows:
            x = read_image(tmp_path / path)
            tiles = torch.stack([x[:, y : y + 16, c : c + 16] for y in (0, 16, 32) for c in (0, 16, 32)])
            per_tile = (loaded.model(tiles) - tiles).pow(2).flatten(1).mean(1)
            assert float(score) == pytest.approx(float(per_tile.max()), rel=1e-5)  # the worst tile
    maps = sorted((tmp_path / "maps").rglob("*.png"))
    assert maps and all(Image.open(m).height == 3 * 48 for m in maps)  # stitched at 48x48, shown 3x

    resized = run(*common, "--whole")
    assert resized.exit_code == 0 and resized.stdout != tiled.stdout  # squashed to 16x16: a choice, not a default


@pytest.mark.parametrize(
    "options, says",
    [
        (["--threshold", "nan"], "finite"),
        (["--threshold", "inf"], "finite"),
        (["--threshold", "0.5", "--contamination", "0.1"], "leave out --threshold 0.5"),
        (["--fpr", "0.2", "--contamination", "0.1"], "leave out --fpr"),
        (["--threshold", "p95", "--fpr", "0.2"], "--fpr sets --threshold auto's rate"),
        (["--workers", "-1"], "--workers"),
    ],
)
def test_thresholds_that_would_be_ignored_or_flag_nothing_are_refused(run, models, npy_file, options, says):
    """--threshold nan flagged nothing, so --fail-on-anomaly passed; --contamination silently won."""
    result = run("score", npy_file, "-m", models["ae"], "--fail-on-anomaly", *options)
    assert result.exit_code == 2 and says in result.stderr, result.stderr

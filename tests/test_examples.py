"""examples/: every YAML loads and names every setting with a comment; every script runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import blobs, write_pngs

EXAMPLES = Path(__file__).parents[1] / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.yaml"))
SCRIPTS = sorted(EXAMPLES.glob("*.sh"))
AE = Path(sys.executable).parent / "ae"  # the console script installed beside this Python


def test_there_is_a_config_per_variant_and_one_for_photos():
    variants = {yaml.safe_load(path.read_text())["variant"] for path in CONFIGS}
    assert {"ae", "denoising", "vae"} <= variants
    assert any(yaml.safe_load(path.read_text()).get("patch_size") for path in CONFIGS)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_names_every_setting_with_a_comment(run, config):
    result = run("train", "--config", config, "--print-config")
    assert result.exit_code == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    written = yaml.safe_load(config.read_text())
    assert set(written) == set(resolved), "every setting `ae train --print-config` knows, and no other"
    for key, value in written.items():
        if value is not None:
            assert resolved[key] == value, key
    for line in config.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            assert "#" in line, f"uncommented setting: {line}"


def test_the_vae_config_trains(run):
    result = run("train", "sample:class=7", "--config", EXAMPLES / "vae.yaml", "--epochs", "1", "-o", "v.safetensors")
    assert result.exit_code == 0, result.stderr
    assert Path("v.safetensors").is_file()


def test_the_photo_config_trains_on_patches_and_denoises_a_larger_photo(run, tmp_path):
    write_pngs(tmp_path / "photos", blobs(6, size=48, channels=3))
    args = ["--epochs", "1", "--patches-per-image", "4", "--workers", "0", "-o", "p.safetensors"]
    result = run("train", tmp_path / "photos", "--config", EXAMPLES / "photo-patches.yaml", *args)
    assert result.exit_code == 0, result.stderr
    result = run("denoise", tmp_path / "photos" / "img000.png", "-m", "p.safetensors", "-o", "clean")
    assert result.exit_code == 0, result.stderr
    from PIL import Image

    assert np.asarray(Image.open("clean/img000.png")).shape == (48, 48, 3)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_strict_bash(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)


EXPECTED = {  # what each script leaves in its output folder
    "anomaly-gate.sh": ["scores.csv", "new-sneakers.csv", "bags.csv"],
    "denoise-folder.sh": ["quality.csv", "before-after.png", "clean"],
    "latent-clusters.sh": ["latents.npy", "rows.txt"],
    "roundtrip.sh": ["decoded.png", "class-means.png", "decoded/000000.png"],
}


@pytest.mark.skipif(not AE.exists(), reason="the ae console script is not installed beside this Python")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_runs_end_to_end_on_the_sample(script, tmp_path):
    env = {**os.environ, "AE": str(AE), "PYTHON": sys.executable, "EPOCHS": "1", "OMP_NUM_THREADS": "1"}
    env["TRAIN"] = "sample:class=0,1,8"  # denoise-folder.sh: train the unet on 600 images, not 2,000
    done = subprocess.run(
        ["bash", str(script), "out"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    for name in EXPECTED[script.name]:
        assert (tmp_path / "out" / name).exists(), name

"""Settings are declared once: --help, docs/cli.md and the YAML examples all agree with the declaration,
and a new objective is one class (here, one defined in this file) that the CLI then offers and trains."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from aecli.config import MODEL_SETTINGS, TRAIN_SETTINGS, objective_settings, variant_defaults
from aecli.models import registry
from aecli.models.objectives.reconstruct import Reconstruct
from aecli.options import section
from aecli.settings import Setting
from conftest import blobs

ROOT = Path(__file__).resolve().parents[1]


def _flat(text: str) -> str:
    return " ".join(text.split())


def _declared() -> list[Setting]:
    return [*MODEL_SETTINGS, *TRAIN_SETTINGS, *objective_settings()]


def _shown(setting: Setting) -> str:
    changed = {v: d[setting.name] for v in registry.list_variants() if setting.name in (d := variant_defaults(v))}
    return setting.describe_default(changed)


def test_help_and_cli_md_show_each_setting_with_its_declared_help_and_default(run):
    help_text = _flat(run("train", "--help").stdout)
    cli_md = _flat((ROOT / "docs" / "cli.md").read_text())
    for setting in _declared():
        entry = f"[default: ({_shown(setting)})]"
        assert setting.flag in help_text and entry in help_text, setting.name
        assert setting.flag in cli_md and entry in cli_md, f"{setting.name}: regenerate docs/cli.md"
        if setting.name != "variant":  # its help lists the variants
            assert _flat(setting.help) in help_text and _flat(setting.help) in cli_md, setting.name


def test_help_puts_each_variants_settings_in_a_section_of_its_own(run):
    help_text = run("train", "--help").stdout
    for setting in _declared():
        title = section(setting)
        assert f"\n{title}:\n" in help_text
        block = help_text.split(f"\n{title}:\n")[1].split("\n\n")[0]
        assert setting.flag in block, f"{setting.flag} belongs under {title}"


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_yaml_examples_name_declared_settings_and_restate_no_other_default(example):
    known = {s.name: s for s in _declared()}
    data = yaml.safe_load(example.read_text())
    variant = data.get("variant", "ae")
    for line in example.read_text().splitlines():
        key = re.match(r"^([a-z_]+):", line)
        if not key:
            continue
        assert key.group(1) in known, f"{example.name}: {key.group(1)} is not a declared setting"
        setting = known[key.group(1)]
        said = re.search(r"\(default:? ([^;)]+)", line)
        if said:
            default = variant_defaults(variant).get(setting.name, setting.default)
            expected = setting.unset if default is None else setting.describe_default()
            if default is not None and setting.name in variant_defaults(variant):
                expected = str(default)
            assert said.group(1) == expected, f"{example.name}: {setting.name}'s default is {expected}"


def test_print_config_shows_the_variants_own_settings_and_not_the_others(run):
    settings = yaml.safe_load(run("train", "--variant", "vae", "--print-config").stdout)
    assert settings["beta"] == 1.0 and "sigma" not in settings and settings["epochs"] == 10
    denoising = yaml.safe_load(run("train", "--variant", "denoising", "--print-config").stdout)
    assert denoising["arch"] == "unet" and denoising["epochs"] == 20 and "beta" not in denoising


def test_a_null_key_keeps_its_default_and_another_variants_key_is_ignored(run, tmp_path):
    (tmp_path / "c.yaml").write_text("variant: denoising\nepochs: null\nbeta: 0.5\n")
    result = run("train", "--config", "c.yaml", "--print-config")
    settings = yaml.safe_load(result.stdout)
    assert result.exit_code == 0 and settings["epochs"] == 20 and "beta" not in settings


def test_a_flag_of_another_variant_is_ignored_with_a_warning(run, npy_file):
    result = run("train", npy_file, "--variant", "ae", "--sigma", "0.3", "--epochs", "1", "-o", "m.safetensors")
    assert result.exit_code == 0 and "--sigma does not apply to --variant ae: ignored" in result.stderr
    assert "sigma" not in run("info", "m.safetensors", "--json").stdout


def test_an_unknown_key_is_an_error_that_names_it(run, tmp_path):
    (tmp_path / "c.yaml").write_text("variant: ae\nlatent_dims: 8\n")
    result = run("train", "sample", "--config", "c.yaml")
    assert result.exit_code == 2 and "unknown key 'latent_dims'" in result.stderr


class Deblur(Reconstruct):
    """A throwaway objective: undo a box blur. It lives in this test file and nowhere else."""

    name = "deblur"
    summary = "undo a box blur"
    settings = (Setting("radius", 1, "Box blur radius in pixels.", low=1),)
    denoises = True

    def corrupt(self, x):
        import torch.nn.functional as F

        k = 2 * self.config.radius + 1
        return F.avg_pool2d(F.pad(x, (self.config.radius,) * 4, mode="replicate"), k, stride=1)


@pytest.fixture
def deblur(monkeypatch):
    monkeypatch.setattr(registry, "_OBJECTIVES", dict(registry._OBJECTIVES))  # gone after the test
    registry.list_variants()  # the built-in objectives first
    registry.register(Deblur)


def test_an_objective_defined_in_a_test_file_appears_in_help_and_trains(run, tmp_path, deblur):
    help_text = _flat(run("train", "--help").stdout)
    assert "deblur: undo a box blur" in help_text
    assert "Options of --variant deblur: --radius <int> Box blur radius in pixels." in help_text

    np.save(tmp_path / "x.npy", blobs(24))
    result = run("train", "x.npy", "--variant", "deblur", "--radius", "2", "--epochs", "2", "-o", "m.safetensors")
    assert result.exit_code == 0, result.stderr
    config = json.loads(run("info", "m.safetensors", "--json").stdout)["model_config"]
    assert config["variant"] == "deblur" and config["radius"] == 2
    denoised = run("denoise", "x.npy", "-m", "m.safetensors", "-o", "out")
    assert denoised.exit_code == 0 and "not trained to denoise" not in denoised.stderr
    assert run("train", "x.npy", "--variant", "deblur", "--radius", "0").exit_code == 2


def test_a_list_setting_takes_comma_separated_integers_or_says_what_it_wants(run):
    assert yaml.safe_load(run("train", "--widths", "8,16", "--print-config").stdout)["widths"] == [8, 16]
    result = run("train", "sample", "--widths", "64,x")
    assert result.exit_code == 2 and "comma-separated integers" in result.stderr and "Traceback" not in result.stderr

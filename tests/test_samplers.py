"""Latent samplers (`ae sample --sampler normal|gmm[:K]`) and active latent dimensions in `ae info`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from aecli import samplers
from tests.conftest import blobs


def test_em_recovers_two_clusters_and_their_spread():
    rng = np.random.default_rng(1)
    z = np.vstack([rng.normal(-3, 1.0, (300, 4)), rng.normal(3, 0.5, (200, 4))])
    fit = samplers.fit_mixture(z, 2, seed=0)
    order = np.argsort(fit["means"][:, 0])
    means, covs, weights = fit["means"][order], fit["covs"][order], fit["weights"][order]
    np.testing.assert_allclose(means, [[-3] * 4, [3] * 4], atol=0.2)
    np.testing.assert_allclose(weights, [0.6, 0.4], atol=0.01)
    np.testing.assert_allclose(np.diagonal(covs, axis1=1, axis2=2), [[1.0] * 4, [0.25] * 4], rtol=0.25)


def test_the_stored_mixture_reproduces_the_latents_mean_and_covariance():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(2000, 3)) @ np.array([[2.0, 0, 0], [1, 1, 0], [0, 0, 0.5]]) + [1, -2, 0]
    record = samplers.mixture_record(z)
    assert record["k"] == samplers.MIXTURE_COMPONENTS and record["n"] == 2000
    w, mu, cov = (np.asarray(record[k]) for k in ("weights", "means", "covs"))
    mean = w @ mu  # the mixture's moments: sum w_j mu_j, and sum w_j (cov_j + mu_j mu_jᵀ) - mean meanᵀ
    total = np.einsum("j,jab->ab", w, cov + mu[:, :, None] * mu[:, None, :]) - np.outer(mean, mean)
    np.testing.assert_allclose(mean, z.mean(0), atol=0.02)
    np.testing.assert_allclose(total, np.cov(z, rowvar=False), atol=0.05)
    drawn = samplers.mixture_draw(record, rng.normal(size=(20000, 3)), rng.random(20000))
    np.testing.assert_allclose(np.cov(drawn, rowvar=False), np.cov(z, rowvar=False), atol=0.15)


def test_the_fit_is_deterministic_and_skips_long_latents():
    z = np.random.default_rng(3).normal(size=(300, 5))
    assert samplers.mixture_record(z) == samplers.mixture_record(z.copy())
    assert samplers.mixture_record(np.zeros((10, samplers.MIXTURE_DIM_LIMIT + 1))) is None
    assert samplers.mixture_record(np.ones((12, 2)))["k"] == 2  # identical rows: regularised, finite
    assert samplers.components_for(7) == 1


@pytest.mark.parametrize("spec", ["gmm:0", "gmm:", "gmm:x", "uniform", "normal:3"])
def test_an_invalid_sampler_is_a_one_line_usage_error(run, models, spec):
    result = run("sample", "-m", models["ae"], "--sampler", spec, "-n", "2", "-o", "out")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: unknown sampler '{spec}'") and result.stderr.count("\n") == 1
    assert not os.path.exists("out")


def test_a_plain_model_samples_from_its_mixture_deterministically(run, models, tmp_path):
    info = json.loads(run("info", models["ae"], "--json").stdout)
    k = info["latent_stats"]["mixture"]["k"]
    assert info["samplers"] == ["normal", f"gmm:{k}"] and info["active_latent_dims"] is None
    for name, sampler, seed in (("a", f"gmm:{k}", "1"), ("b", "gmm", "1"), ("c", "gmm", "2"), ("d", "normal", "1")):
        result = run("sample", "-m", models["ae"], "--sampler", sampler, "-n", "6", "-o", name, "--seed", seed)
        assert result.exit_code == 0, result.stderr
    assert f"{k}-component Gaussian mixture fitted to" in result.stderr or "Gaussian fitted to" in result.stderr
    read = lambda d: [(tmp_path / d / f"{i:06d}.png").read_bytes() for i in range(6)]  # noqa: E731
    assert read("a") == read("b") != read("c")
    assert read("a") != read("d")
    other = run("sample", "-m", models["ae"], "--sampler", f"gmm:{k + 1}", "-n", "2", "-o", "e")
    assert other.exit_code == 2 and f"stores a {k}-component mixture" in other.stderr
    assert f"use --sampler gmm or gmm:{k}" in other.stderr


def test_a_vae_offers_its_prior_and_its_aggregate_posterior_mixture(run, models):
    info = run("info", models["vae"])
    assert info.exit_code == 0
    assert "samplers" in info.stdout and "gmm:" in info.stdout and "active latent dims" in info.stdout
    result = run("sample", "-m", models["vae"], "--sampler", "gmm", "-n", "3", "--grid", "g.png")
    assert result.exit_code == 0 and "Gaussian mixture fitted to" in result.stderr


def test_a_larger_beta_leaves_fewer_active_latent_dimensions(run, tmp_path):
    np.save(tmp_path / "blobs.npy", blobs(400))
    active = {}
    for beta in ("0.1", "8"):
        flags = ["--epochs", "6", "--lr", "3e-3", "--batch-size", "16", "--latent-dim", "8", "-q"]
        result = run("train", "blobs.npy", "--variant", "vae", "--beta", beta, "-o", f"b{beta}.safetensors", *flags)
        assert result.exit_code == 0, result.stderr
        active[beta] = json.loads(run("info", f"b{beta}.safetensors", "--json").stdout)["active_latent_dims"]
    assert active["0.1"]["of"] == active["8"]["of"] == 8
    assert active["0.1"]["active"] >= 5 and active["8"]["active"] <= 2  # seen: 8 and 0


def test_a_file_from_before_mixtures_offers_normal_only(run):
    old = os.path.join(os.path.dirname(__file__), "fixtures", "v1", "ae-conv.safetensors")
    assert json.loads(run("info", old, "--json").stdout)["samplers"] == ["normal"]
    result = run("sample", "-m", old, "--sampler", "gmm", "-n", "2", "-o", "out")
    assert result.exit_code == 1 and "stores no latent mixture" in result.stderr and result.stderr.count("\n") == 1
    assert run("sample", "-m", old, "-n", "2", "-o", "out", "-q").exit_code == 0

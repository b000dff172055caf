"""What `ae sample` draws latents from, and what a model file's latent statistics say about its latent.

`normal`: a VAE's prior N(0, I), or the Gaussian fitted to a plain model's training latents.
`prior`: a prior learnt in training (a VQ-VAE's over its codes); the default where there is one.
`gmm`: a Gaussian mixture fitted by EM to the same training latents after training (a VAE's
posterior means: its aggregate posterior), stored beside them in `latent_stats` as `mixture`. A
mixture follows latents that clump, which one Gaussian smears over, so a plain autoencoder
becomes a usable generator ("two-stage" sampling: Ghosh et al. 2020; Dai & Wipf 2019).

Importing this module costs neither torch nor numpy: `ae info` reports samplers and active
dimensions from the stored statistics in plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aecli.errors import AecliError, UsageError

if TYPE_CHECKING:
    import numpy as np

MIXTURE_COMPONENTS = 10  # as pythae's GaussianMixtureSampler; fewer when there are few latents
MIXTURE_ROWS_PER_COMPONENT = 5  # below this many latents per component, fewer components
MIXTURE_DIM_LIMIT = 64  # longer latents (a map without a bottleneck) get no mixture: see mixture_record
MIXTURE_FIT_LIMIT = 5_000  # rows the EM sees at most: 500 per component; at most ~3 s on one core
ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016: dimension i is active if Cov_x(E_q[z_i|x]) > 0.01


@dataclass(frozen=True)
class Sampler:
    name: str  # "normal", "gmm" or "prior"
    components: int | None = None  # gmm:K asks for K; plain `gmm` takes the stored mixture

    def __str__(self) -> str:
        return self.name if self.components is None else f"{self.name}:{self.components}"


def parse(spec: str) -> Sampler:
    """`normal`, `prior`, `gmm` or `gmm:K`; anything else is a usage error naming what works."""
    text = spec.strip().lower()
    name, colon, k = text.partition(":")
    if name in ("normal", "prior") and not colon:
        return Sampler(name)
    if name == "gmm" and (not colon or (k.isdigit() and int(k) > 0)):
        return Sampler("gmm", int(k) if k else None)
    raise UsageError(f"unknown sampler {spec!r}: use normal, prior, gmm or gmm:K (K a whole number above 0)")


def default(learnt_prior: bool) -> Sampler:
    """What `ae sample` draws from unless told: the prior a model learnt, else `normal`."""
    return Sampler("prior" if learnt_prior else "normal")


def offered(latent_stats: dict[str, Any] | None, prior: bool, learnt_prior: bool = False) -> list[str]:
    """The samplers a file supports, as `--sampler` spells them, its default first; `prior`: the
    latent has its own N(0, I) (a VAE's); `learnt_prior`: a prior learnt in training (a VQ-VAE's)."""
    mixture = (latent_stats or {}).get("mixture")
    return [
        *(["prior"] if learnt_prior else []),
        *(["normal"] if prior or latent_stats else []),
        *([f"gmm:{mixture['k']}"] if mixture else []),
    ]


def mixture_of(latent_stats: dict[str, Any] | None, sampler: Sampler) -> dict[str, Any]:
    """The stored mixture `sampler` asks for, or an error saying what the file holds instead."""
    mixture = (latent_stats or {}).get("mixture")
    if not mixture:
        raise AecliError(
            "it stores no latent mixture for --sampler gmm (written before aecli fitted one, by an unfinished "
            f"run, or with a latent over {MIXTURE_DIM_LIMIT} numbers); use --sampler normal"
        )
    if sampler.components not in (None, mixture["k"]):
        raise UsageError(
            f"--sampler gmm:{sampler.components}: the file stores a {mixture['k']}-component mixture, fitted "
            f"after training; use --sampler gmm or gmm:{mixture['k']}"
        )
    return mixture


def active_dimensions(latent_stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """How many latent numbers vary across the training images by more than ACTIVE_THRESHOLD (the
    stored covariance's diagonal: for a VAE, Cov_x of the posterior mean). The others carry no
    information about the image: the posterior collapsed onto the prior there."""
    if not latent_stats or "cov" not in latent_stats:
        return None
    variances = [row[i] for i, row in enumerate(latent_stats["cov"])]
    return {
        "active": sum(v > ACTIVE_THRESHOLD for v in variances),
        "of": len(variances),
        "threshold": ACTIVE_THRESHOLD,
    }


def components_for(n: int) -> int:
    return max(1, min(MIXTURE_COMPONENTS, n // MIXTURE_ROWS_PER_COMPONENT))


def fit_mixture(z: np.ndarray, k: int, *, seed: int = 0, iterations: int = 100, tol: float = 1e-3) -> dict[str, Any]:
    """A k-component Gaussian mixture fitted to the rows of z by EM (float64, seeded, deterministic
    on one machine): k-means++ starting means, then EM until the mean log-likelihood per row gains
    less than `tol`. Each covariance gets 1e-4 of the data's mean variance added to its diagonal,
    so a component on a few (or identical) rows stays invertible."""
    import numpy as np

    z = np.asarray(z, dtype=np.float64)
    n, d = z.shape
    rng = np.random.default_rng(seed)
    reg = 1e-4 * max(float(z.var(0).mean()), 1e-12)
    means = z[[rng.integers(n)]]
    gap = ((z - means[0]) ** 2).sum(1)
    for _ in range(1, k):  # k-means++: each next mean drawn in proportion to the squared distance
        row = z[rng.choice(n, p=gap / gap.sum()) if gap.sum() > 0 else rng.integers(n)]
        means, gap = np.vstack([means, row]), np.minimum(gap, ((z - row) ** 2).sum(1))
    shared = np.cov(z, rowvar=False).reshape(d, d) + reg * np.eye(d)
    covs, weights = np.stack([shared] * k), np.full(k, 1 / k)
    previous = -np.inf
    for _ in range(iterations):
        logp = _log_densities(z, means, covs) + np.log(weights)  # E step
        top = logp.max(1, keepdims=True)
        total = top[:, 0] + np.log(np.exp(logp - top).sum(1))
        resp = np.exp(logp - total[:, None])
        nk = resp.sum(0) + 1e-10  # M step
        weights, means = nk / n, (resp.T @ z) / nk[:, None]
        for j in range(k):
            diff = z - means[j]
            covs[j] = (resp[:, j, None] * diff).T @ diff / nk[j] + reg * np.eye(d)
        likelihood = float(total.mean())
        if likelihood - previous < tol:
            break
        previous = likelihood
    return {
        "k": k,
        "weights": weights,
        "means": means,
        "covs": covs,
        "log_likelihood": likelihood,
    }


def _log_densities(z: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """log N(z_i; mean_j, cov_j) for every row i and component j: (n, k)."""
    import numpy as np

    n, d = z.shape
    out = np.empty((n, len(means)))
    for j, (mean, cov) in enumerate(zip(means, covs)):
        factor = np.linalg.cholesky(cov)
        y = np.linalg.inv(factor) @ (z - mean).T  # ten times a solve's speed for d <= 64
        out[:, j] = -0.5 * (y * y).sum(0) - np.log(np.diag(factor)).sum()
    return out - 0.5 * d * np.log(2 * np.pi)


def mixture_record(z: np.ndarray, seed: int = 0) -> dict[str, Any] | None:
    """The `mixture` field of latent_stats for the training latents z, rounded as the rest is; None
    for latents longer than MIXTURE_DIM_LIMIT (a map without a bottleneck, hundreds of numbers),
    where ten full covariances would outweigh the model and EM would take minutes."""
    from aecli.scoring.calibration import _round

    if len(z) < 2 or z.shape[1] > MIXTURE_DIM_LIMIT:
        return None
    z = z[:: -(-len(z) // MIXTURE_FIT_LIMIT)]  # evenly thinned
    fit = fit_mixture(z, components_for(len(z)), seed=seed)
    return {
        "k": fit["k"],
        "n": len(z),
        "weights": _round(fit["weights"]),
        "means": _round(fit["means"]),
        "covs": _round(fit["covs"]),
    }


def mixture_draw(mixture: dict[str, Any], eps: np.ndarray, u: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Latents from the stored mixture: row i takes the component where the cumulative weights
    pass u_i (uniform in [0, 1)), then mean + temperature · L·ε_i, with L Lᵀ its covariance."""
    import numpy as np

    weights = np.asarray(mixture["weights"], dtype=np.float64)
    means, covs = np.asarray(mixture["means"], dtype=np.float64), np.asarray(mixture["covs"], dtype=np.float64)
    picks = np.minimum(np.searchsorted(np.cumsum(weights / weights.sum()), u, side="right"), len(weights) - 1)
    z = means[picks]
    for j in np.unique(picks):
        rows = picks == j
        values, vectors = np.linalg.eigh((covs[j] + covs[j].T) / 2)  # rounding may leave it a hair off PSD
        z[rows] += temperature * eps[rows] @ (vectors * np.sqrt(np.clip(values, 0, None))).T
    return z

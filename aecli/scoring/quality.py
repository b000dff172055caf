"""Image quality against a reference: PSNR and SSIM, per image, in torch.

SSIM follows Wang et al. (2004): an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03,
pixels in [0, 1], averaged over the valid window positions and over channels (as scikit-image
does with `gaussian_weights=True`). The per-pixel map is also what `ae score --metric ssim` uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aecli.io.tabular import csv_lines

_C1, _C2 = 0.01**2, 0.03**2


def psnr(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of (B, C, H, W) images in [0, 1], (B,); inf when equal."""
    mse = (x.float() - reference.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


def _window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(x: torch.Tensor, reference: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Local SSIM of (B, C, H, W) images, (B, C, H', W') over the valid window positions.

    Images smaller than the window use a window as large as they are. Computed in float64:
    variances are differences of nearly equal sums, which float32 rounds visibly.
    """
    x, y = x.double(), reference.double()
    window = min(window, x.shape[-1], x.shape[-2])
    window -= 1 - window % 2  # odd, so the window has a centre
    w = _window(window, sigma, x.shape[1], x.device).double()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=x.shape[1])

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    n = window * window
    vx, vy, cxy = (v * n / (n - 1) for v in (vx, vy, cxy))  # sample covariances, as scikit-image
    return ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))


def ssim(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image, (B,): 1 for identical images."""
    return ssim_map(x, reference).flatten(1).mean(1).float()


class QualityReport:
    """PSNR and SSIM of each image before and after denoising, against its clean reference."""

    COLUMNS = ("path", "psnr_before", "psnr_after", "ssim_before", "ssim_after")

    def __init__(self) -> None:
        self.rows: list[dict[str, float | str]] = []

    def add(self, name: str, before: torch.Tensor, after: torch.Tensor, reference: torch.Tensor) -> None:
        pair = torch.stack([before.float(), after.float()])
        ref = reference.float().expand_as(pair)
        p, s = psnr(pair, ref).tolist(), ssim(pair, ref).tolist()
        self.rows.append(
            {"path": name, "psnr_before": p[0], "psnr_after": p[1], "ssim_before": s[0], "ssim_after": s[1]}
        )

    def summary(self) -> dict[str, float]:
        """Means over images (PSNR capped at 100 dB so one exact match cannot make it infinite)."""
        out = {}
        for key in self.COLUMNS[1:]:
            values = torch.tensor([float(r[key]) for r in self.rows], dtype=torch.float64)
            out[key] = float(values.clamp(max=100).mean()) if len(values) else float("nan")
        return out

    def csv(self) -> str:
        rows = ([r[k] for k in self.COLUMNS] for r in self.rows)
        return "".join(csv_lines(self.COLUMNS, rows))

"""Where an image differs from its reconstruction: input, reconstruction and a heat overlay, side by side.

Colour is the per-pixel absolute error averaged over channels, scaled per image to its largest
error but never below MIN_SCALE, so a well-reconstructed image stays dark instead of having its
noise stretched into false alarms. A model that predicts its own anomaly map (draem's
segmentation, a probability) is shown by that map instead, unscaled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aecli import runtime
from aecli.io.files import mirror_targets
from aecli.io.pictures import save_png
from aecli.io.writer import Writer

MIN_SCALE = 0.1  # an error of 0.1 (10 % of the pixel range) or more is full heat
VIEW_SIZE = 128  # small images are enlarged (nearest neighbour) to at least this, to be seen

# black, purple, red, orange, pale yellow: a perceptually ordered ramp like matplotlib's inferno
_RAMP = torch.tensor([[0.0, 0.0, 0.02], [0.34, 0.06, 0.43], [0.73, 0.21, 0.33], [0.98, 0.55, 0.04], [0.99, 1.0, 0.64]])


def colourize(values: torch.Tensor) -> torch.Tensor:
    """(H, W) in [0, 1] to (3, H, W) colours along the ramp."""
    t = values.clamp(0, 1) * (len(_RAMP) - 1)
    low = t.floor().long().clamp(max=len(_RAMP) - 2)
    frac = (t - low)[..., None]
    return ((1 - frac) * _RAMP[low] + frac * _RAMP[low + 1]).permute(2, 0, 1)


def panel(x: torch.Tensor, recon: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
    """(3, H', 3W'+gaps): the input, its reconstruction, and the heat over the input: the error,
    or the model's `own` map (H, W) in [0, 1]."""
    if own is None:
        error = (recon.float() - x.float()).abs().mean(0)
        heat = colourize(error / max(float(error.max()), MIN_SCALE))
    else:
        heat = colourize(own.float())
    grey = x.float().mean(0, keepdim=True).expand(3, -1, -1)
    overlay = 0.45 * grey + 0.55 * heat
    pieces = [x.float().expand(3, -1, -1), recon.float().expand(3, -1, -1), overlay]
    factor = max(1, -(-VIEW_SIZE // x.shape[-1]))
    pieces = [F.interpolate(p[None], scale_factor=factor, mode="nearest")[0] for p in pieces]
    gap = torch.ones(3, pieces[0].shape[1], 4)
    return torch.cat([pieces[0], gap, pieces[1], gap, pieces[2]], dim=2)


def write_maps(loaded, images, rows: np.ndarray, out_dir: Path, **options) -> int:
    """A map PNG for each image at `rows`, mirroring its relative path below `out_dir`."""
    from aecli.scoring.scores import score_batches

    rows = np.asarray(rows).tolist()
    targets = mirror_targets(out_dir, [images.relative(i) for i in rows], names=[images.name(i) for i in rows])
    target_of = dict(zip(rows, targets))
    written = 0
    with Writer() as writer:  # drawn and written while the model scores the next batch
        for batch, _, recon in score_batches(loaded, images, np.asarray(rows), **options):
            for x, r, i in zip(batch.pixels, recon, batch.index.tolist()):
                writer.submit(write_map, target_of[i], x, r, own_map(loaded, x, r))
                written += 1
    return written


def write_map(path: Path, x: torch.Tensor, recon: torch.Tensor, own: torch.Tensor | None = None) -> None:
    save_png(path, panel(x, recon, own))


@torch.no_grad()
def own_map(loaded, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor | None:
    """The model's own anomaly map of one image at the size it was scored (H, W), on the CPU;
    None for a model without one. Fully convolutional, it runs on the whole image at once, so a
    tiled image's map comes from its stitched reconstruction at native resolution."""
    device = loaded.device
    with torch.autocast(device.type, enabled=False):
        own = loaded.model.anomaly_map(runtime.to_device(x[None], device), runtime.to_device(recon[None], device))
    return None if own is None else own[0].float().cpu()


def anomaly_map(loaded, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """One image's per-pixel anomaly (H, W): the model's own map, else the error averaged over channels."""
    own = own_map(loaded, x, recon)
    return own if own is not None else (recon.float() - x.float()).abs().mean(0)

"""The eight symmetries of the square (a quarter turn 0-3 times, mirrored or not), applied per image:
what the denoiser's --augment draws from, what the geometric objective learns to tell apart, and
what `ae denoise --tta` averages over."""

from __future__ import annotations

SYMMETRIES = 8  # number t: mirrored when t >= 4, then turned t % 4 quarter turns


def transformed(x, which):
    """Each image of x (B, C, H, W) in its symmetry: `which`, a number 0-7 per image, or one for all.
    Only the even ones (half turns and mirrors) keep a non-square image's shape: give no other."""
    import torch

    if isinstance(which, int):
        mirrored = x.flip(-1) if which >= 4 else x
        return torch.rot90(mirrored, which % 4, (-2, -1))
    # every view of the whole batch, then each image's own picked out: a few copies of the batch,
    # and no look at `which` on the host, so a GPU never waits here
    step = 1 if x.shape[-1] == x.shape[-2] else 2
    views = torch.stack([transformed(x, t) for t in range(0, SYMMETRIES, step)])
    return views[which // step, torch.arange(len(x), device=x.device)]


def undone(y, which: int):
    """y (B, C, H, W) taken back from symmetry `which`: the inverse of transformed(y, which)."""
    import torch

    turned = torch.rot90(y, -(which % 4), (-2, -1))
    return turned.flip(-1) if which >= 4 else turned


def averaged(fn, x):
    """fn(x) averaged over the eight symmetries: fn of each transformed batch, taken back, then the
    mean (test-time augmentation). A model that treats every orientation alike (one trained with
    --augment) gives eight estimates whose errors partly cancel, for eight times the compute."""
    total = undone(fn(x), 0).float()
    for t in range(1, SYMMETRIES):
        total += undone(fn(transformed(x, t)), t).float()
    return total / SYMMETRIES

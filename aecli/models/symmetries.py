"""The eight symmetries of the square (a quarter turn 0-3 times, mirrored or not), applied per image:
what the denoiser's --augment draws from and what the geometric objective learns to tell apart."""

from __future__ import annotations

SYMMETRIES = 8  # number t: mirrored when t >= 4, then turned t % 4 quarter turns


def transformed(x, which):
    """Each image of x (B, C, H, W) in its symmetry: `which`, a number 0-7 per image, or one for all.
    Only the even ones (half turns and mirrors) keep a non-square image's shape."""
    import torch

    if isinstance(which, int):
        mirrored = x.flip(-1) if which >= 4 else x
        return torch.rot90(mirrored, which % 4, (-2, -1))
    out = torch.empty_like(x)
    for t in range(SYMMETRIES):
        chosen = which == t
        if chosen.any():
            out[chosen] = transformed(x[chosen], t)
    return out

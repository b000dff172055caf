"""A VQ-VAE's codebook: vectors that follow the encoder's outputs by moving averages.

Each code vector is the moving average of the outputs assigned to it (van den Oord et al. 2017,
appendix A.1), which trains faster and more stably than a codebook loss. A code chosen far less
often than the average one is moved onto a recent output ("revived"), so the codebook does not
shrink to the few codes that won early.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

DECAY = 0.99  # the moving averages remember about the last hundred steps


class Codebook(nn.Module):
    def __init__(self, size: int, dim: int, dead_fraction: float):
        super().__init__()
        self.dead_fraction = dead_fraction  # a code chosen this much less often than the average one is revived
        self.placed = False  # `started`, as known without asking the device
        self.register_buffer("vectors", torch.randn(size, dim))
        self.register_buffer("counts", torch.zeros(size))  # moving count of the outputs assigned per step
        self.register_buffer("sums", torch.zeros(size, dim))  # moving sum of those outputs
        self.register_buffer("started", torch.zeros(()))  # 1 once a first batch has placed the vectors

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self.placed = False  # `started` may have changed: read it again at the next step

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """The number of the nearest code to each cell of z (B, D, h, w): (B, h, w)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()
        e = self.vectors
        distance = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.T + e.pow(2).sum(1)
        return distance.argmin(1).view(b, h, w)

    def vectors_of(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) code numbers to their vectors, (B, D, h, w)."""
        return self.vectors[codes].permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def follow(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        """One moving-average step towards the outputs z (B, D, h, w) assigned to each code."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()
        if not self.placed:
            self.placed = bool(self.started)  # read from the device once, not at every step
        if not self.placed:  # the first batch places every code where some output is; no use counted yet
            self.vectors.copy_(picks(flat, len(self.vectors)))
            self.started.fill_(1.0)
            self.placed = True
            return
        onehot = nn.functional.one_hot(codes.flatten(), len(self.vectors)).to(flat.dtype)
        counts, sums = onehot.sum(0), onehot.T @ flat
        if dist.is_available() and dist.is_initialized():  # under torchrun every process follows the whole batch
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        # lerp_, not mul_(DECAY).add_(new, alpha=1 - DECAY): torch 2.14's inductor dropped that alpha after
        # a matrix product (sums 100 times too large under --compile)
        self.counts.lerp_(counts, 1 - DECAY)
        self.sums.lerp_(sums, 1 - DECAY)
        n = self.counts.sum()
        smoothed = (self.counts + 1e-5) / (n + len(self.counts) * 1e-5) * n  # Laplace: no code divides by 0
        self.vectors.copy_(self.sums / smoothed[:, None])
        # unused codes move onto outputs of this batch, counted as just below use until chosen; masked,
        # so the device is never waited for
        floor = self.dead_fraction * n / len(self.counts)
        dead = (self.counts < floor)[:, None]
        fresh = flat[torch.randint(len(flat), (len(self.vectors),), device=flat.device)]
        self.vectors.copy_(torch.where(dead, fresh, self.vectors))
        self.sums.copy_(torch.where(dead, fresh * floor, self.sums))
        self.counts.copy_(torch.where(dead[:, 0], floor, self.counts))


def picks(rows: torch.Tensor, k: int) -> torch.Tensor:
    """k of the rows at random, without repeats where there are enough."""
    if len(rows) >= k:
        chosen = torch.randperm(len(rows), device=rows.device)[:k]
    else:
        chosen = torch.randint(len(rows), (k,), device=rows.device)
    return rows[chosen].clone()


def perplexity(codes: torch.Tensor, size: int) -> torch.Tensor:
    """exp(entropy) of the codes' use: how many codes are in use, as if all equally often."""
    share = torch.bincount(codes.flatten(), minlength=size).float() / codes.numel()
    return torch.exp(-(share * torch.log(share.clamp_min(1e-10))).sum())

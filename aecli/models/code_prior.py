"""A prior over a VQ-VAE's code grids: a small causal transformer, cell by cell in raster order.

p(grid) = prod_i p(cell i | cells before it). It learns from the codes of each training batch
(detached, so it never pulls on the encoder), draws new grids for `ae sample`, and its negative
log-likelihood says how unlike the training codes an image's code is.
"""

from __future__ import annotations

import torch
from torch import nn

WIDTH, LAYERS, HEADS = 128, 2, 4  # for grids of 16 to 64 cells; about 400k weights


class CodePrior(nn.Module):
    def __init__(self, codes: int, cells: int):
        super().__init__()
        self.cells = cells
        self.embed = nn.Embedding(codes + 1, WIDTH)  # the last one means "start", before the first cell
        self.position = nn.Parameter(torch.randn(cells, WIDTH) * 0.02)
        layer = nn.TransformerEncoderLayer(WIDTH, HEADS, 4 * WIDTH, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.out = nn.Linear(WIDTH, codes)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits for each cell from the cells before it: (B, L) codes in, (B, L, codes) out."""
        start = torch.full_like(codes[:, :1], self.embed.num_embeddings - 1)
        seen = torch.cat([start, codes[:, :-1]], dim=1)
        length = seen.shape[1]
        h = self.embed(seen) + self.position[:length]
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=codes.device)
        return self.out(self.norm(self.blocks(h, mask=mask, is_causal=True)))

    def nll(self, codes: torch.Tensor) -> torch.Tensor:
        """-log p of each cell's code given those before it: (B, L), float32."""
        logits = self(codes).float()
        return nn.functional.cross_entropy(logits.transpose(1, 2), codes, reduction="none")

    @torch.no_grad()
    def draw(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        """n grids (n, cells), each cell drawn from p(cell | those before) with its logits over
        `temperature` (0: the likeliest). Drawn on the CPU from `generator`: one seed, one draw anywhere."""
        device = self.position.device
        codes = torch.zeros(n, 0, dtype=torch.long, device=device)
        for _ in range(self.cells):
            upto = torch.cat([codes, codes.new_zeros(n, 1)], dim=1)  # the new cell: predicted, never seen
            logits = self(upto)[:, -1].float().cpu()
            if temperature <= 0:
                chosen = logits.argmax(1, keepdim=True)
            else:
                chosen = torch.multinomial(torch.softmax(logits / temperature, 1), 1, generator=generator)
            codes = torch.cat([codes, chosen.to(device)], dim=1)
        return codes

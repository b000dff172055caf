"""The peers of benchmarks/generation.py: pythae's VAE and VQ-VAE, run by a Python that has pythae,
so that it is never installed into ae's own environment.

    PEER_PYTHON _generation_peers.py vae|vqvae TRAIN.npz EPOCHS SAMPLES WORK

TRAIN.npz holds `images`, uint8 (N, 28, 28). Writes WORK/pythae-MODEL-SAMPLER.npy (float32
(SAMPLES, 1, 28, 28) in [0, 1]) for each sampler and WORK/pythae-MODEL.json: training seconds, and
each sampler's seconds to fit and draw.

Both models get ae's default backbone for 28x28 (aecli.config.default_widths: stride-2 convs of
32, 64, 128 on the image padded to 32x32, transposed convs back, sigmoid pixels), so that only the
objectives and samplers differ: the VAE through a Linear to a 32-d latent (ae's --latent-dim), the
VQ-VAE without one (ae's --no-bottleneck: a 4x4 map of 32-d codes, pythae's 512-code book). Both
train as ae trains: Adam at 1e-3, batches of 128, cosine decay over the epochs (per epoch in pythae),
10 % held out, seed 0. Otherwise pythae's defaults: the VAE's loss is its own (0.5 x summed squared
error + KL, where ae sums the squared error), the GaussianMixtureSampler has 10 components, the
PixelCNNSampler 10 masked layers of kernel 5, trained for the same epochs as the rest.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from torch import nn

WIDTHS = (32, 64, 128)
LATENT = 32
PAD = 2  # 28 -> 32, a multiple of 2**3, by edge replication as ae pads


def down() -> nn.Sequential:
    layers, prev = [], 1
    for w in WIDTHS:
        layers += [nn.Conv2d(prev, w, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        prev = w
    return nn.Sequential(*layers)


def up() -> nn.Sequential:
    layers = []
    for w_in, w_out in zip(WIDTHS[::-1], [*WIDTHS[-2::-1], 1]):
        layers += [nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers[:-1])


def pixels(logits: torch.Tensor) -> ModelOutput:
    return ModelOutput(reconstruction=torch.sigmoid(logits[..., PAD:-PAD, PAD:-PAD]))


class Encoder(BaseEncoder):
    """A vector of mean and log-variance (VAE), or a 4x4 map of embeddings (VQ-VAE)."""

    def __init__(self, vector: bool):
        super().__init__()
        self.vector = vector
        last = [nn.Flatten(), nn.Linear(WIDTHS[-1] * 16, 2 * LATENT)] if vector else [nn.Conv2d(WIDTHS[-1], LATENT, 1)]
        self.net = nn.Sequential(down(), *last)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.net(F.pad(x, (PAD,) * 4, mode="replicate"))
        if not self.vector:
            return ModelOutput(embedding=h)
        mu, log_var = h.chunk(2, dim=1)
        return ModelOutput(embedding=mu, log_covariance=log_var)


class Decoder(BaseDecoder):
    def __init__(self, vector: bool):
        super().__init__()
        self.vector = vector
        self.expand = nn.Linear(LATENT, WIDTHS[-1] * 16) if vector else nn.Conv2d(LATENT, WIDTHS[-1], 1)
        self.net = up()

    def forward(self, z: torch.Tensor) -> ModelOutput:
        h = F.relu(self.expand(z))
        return pixels(self.net(h.view(-1, WIDTHS[-1], 4, 4) if self.vector else h))


def training(epochs: int, out: Path):
    from pythae.trainers import BaseTrainerConfig

    return BaseTrainerConfig(
        output_dir=str(out), num_epochs=epochs, learning_rate=1e-3, per_device_train_batch_size=128,
        per_device_eval_batch_size=128, scheduler_cls="CosineAnnealingLR", scheduler_params={"T_max": epochs}, seed=0,
    )  # fmt: skip


def main(model: str, data: str, epochs: str, samples: str, work: str) -> None:
    from pythae.models import VAE, VQVAE, VAEConfig, VQVAEConfig
    from pythae.pipelines import TrainingPipeline
    from pythae.samplers import GaussianMixtureSampler, NormalSampler, PixelCNNSampler

    work_dir, n, e = Path(work), int(samples), int(epochs)
    with np.load(data) as archive:
        x = torch.from_numpy(archive["images"]).float().div_(255)[:, None]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    held = len(x) // 10
    train, val = x[order[held:]], x[order[:held]]
    vector = model == "vae"
    config = (VAEConfig if vector else VQVAEConfig)(input_dim=(1, 28, 28), latent_dim=LATENT)
    net = (VAE if vector else VQVAE)(config, encoder=Encoder(vector), decoder=Decoder(vector))
    started = time.perf_counter()
    pipeline = TrainingPipeline(training_config=training(e, work_dir / f"pythae-{model}"), model=net)
    pipeline(train_data=train, eval_data=val)
    report = {"train_s": time.perf_counter() - started, "samplers": {}}
    net.eval()
    if vector:
        chosen = {"normal": NormalSampler(net), "gmm": GaussianMixtureSampler(net)}
    else:
        chosen = {"pixelcnn": PixelCNNSampler(net)}
    for name, sampler in chosen.items():
        torch.manual_seed(0)
        started = time.perf_counter()
        if name == "gmm":
            sampler.fit(train)
        elif name == "pixelcnn":
            sampler.fit(train, val, training_config=training(e, work_dir / "pythae-pixelcnn"))
        with torch.no_grad():
            images = sampler.sample(num_samples=n).float().cpu().clamp(0, 1).numpy()
        report["samplers"][name] = time.perf_counter() - started
        np.save(work_dir / f"pythae-{model}-{name}.npy", images)
    (work_dir / f"pythae-{model}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])

"""`draem`: find and locate small local defects, as DRAEM does (Zavrtanik et al., 2021).

A plain autoencoder reconstructs a thin scratch almost perfectly, so its error misses it. Here
training pastes synthetic anomalies into normal images on the fly (Perlin-noise shaped patches of
foreign texture), the backbone learns to give back the clean image, and a small fully
convolutional segmentation head, seeing the input beside its reconstruction, learns where the
image was altered. Its map is the anomaly map; its smoothed maximum is the image's score. The
synthetic anomalies need not look like the real ones: the head learns "not like the rest".
"""

from __future__ import annotations

from aecli.errors import InputError
from aecli.models.objectives.base import Objective
from aecli.models.registry import register
from aecli.settings import Setting

SEGMENT_WIDTH = 32  # the head's channels: small enough to run on a whole photograph at once
SOURCE_LIMIT = 200  # foreign textures kept from --anomaly-source: variety without filling memory
PEAK_FRACTION = 0.01  # an image's score: the mean of its top 1 % of map values, a max that one pixel cannot make
SEE_THROUGH = 0.8  # the original shows through a synthetic anomaly by up to this much (DRAEM's beta): faint ones too


@register
class Draem(Objective):
    name = "draem"
    summary = "find and locate small defects: a segmentation head trained on synthetic anomalies (DRAEM)"
    settings = (
        Setting("anomaly_source", None, "Folder of images to cut the synthetic anomalies' texture from (e.g. "
                "a texture collection such as DTD).", kind=str, unset="the batch's other training images"),
        # DRAEM's half: the other half teaches the head to find nothing on normal images
        Setting("anomaly_fraction", 0.5, "Fraction of training images given a synthetic anomaly.", low=0, high=1),
    )  # fmt: skip
    # skip connections keep the detail the head compares against; the head learns local
    # texture, which wants more and smaller steps than the seed recipe
    defaults = {"arch": "unet", "epochs": 20, "batch_size": 32, "lr": 2e-3}
    metrics = ("segmentation",)
    default_metric = "segmentation"

    def __init__(self, config):
        super().__init__(config)
        self.textures = None  # --anomaly-source's images, read at the first training step

    def networks(self):
        return {"segment": segment_head(self.config.channels)}

    def loss(self, model, batch):
        """Reconstruct the clean image from an altered copy, and segment where it was altered (focal loss)."""
        import torch

        from aecli.models.backbones import pixel_loss

        x = batch["images"]
        altered, mask = self.synthesize(x)
        z, skips = self.latent(model, altered)
        out = model.net.decode(z, skips, tuple(x.shape[-2:]))
        reconstruction = pixel_loss(out, x, self.config.loss).mean()
        logits = model.heads["segment"](segment_input(altered, torch.sigmoid(out.float()).to(altered.dtype)))
        segmentation = focal_loss(logits.float(), mask.float())
        return {
            "loss": reconstruction + segmentation,
            "reconstruction": reconstruction.detach(),
            "segmentation": segmentation.detach(),
        }

    def scores(self, model, x, recon=None):
        """`segmentation`: the mean of the top 1 % of the predicted map."""
        recon = model.analyse(x)[0] if recon is None else recon
        return {"segmentation": peak(self.anomaly_map(model, x, recon))}

    def anomaly_map(self, model, x, recon):
        """The head's probability that each pixel was altered: fully convolutional, so any size."""
        import torch

        x = x.float()
        return torch.sigmoid(model.heads["segment"](segment_input(x, recon.to(x))).float())[:, 0]

    def synthesize(self, x):
        """Altered copies of a clean batch and where they were altered, (B, 1, H, W) of 0 and 1."""
        import torch

        n, _, height, width = x.shape
        mask = perlin_masks(n, height, width, device=x.device).to(x.dtype)
        mask = mask * (torch.rand(n, 1, 1, 1, device=x.device) < self.config.anomaly_fraction).to(x.dtype)
        see_through = SEE_THROUGH * torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype)
        foreign = jitter(self.foreign(x))
        return x * (1 - mask) + mask * ((1 - see_through) * foreign + see_through * x), mask

    def foreign(self, x):
        """Texture to paste: each image's neighbour in the batch, or crops of --anomaly-source images."""
        import torch

        if not self.config.anomaly_source:
            return x.roll(1, 0)
        if self.textures is None:
            self.textures = read_textures(self.config.anomaly_source, self.config.channels)
        picks = torch.randint(len(self.textures), (len(x),)).tolist()
        return torch.stack([random_crop(self.textures[k], x.shape[-2:]) for k in picks]).to(x)


def segment_head(channels: int):
    """Input, reconstruction and their difference in, one logit per pixel out; dilations see 17x17 pixels."""
    from torch import nn

    layers, width = [], SEGMENT_WIDTH
    for c_in, dilation in ((3 * channels, 1), (width, 2), (width, 4), (width, 1)):
        layers += [nn.Conv2d(c_in, width, 3, padding=dilation, dilation=dilation, padding_mode="replicate")]
        layers += [nn.ReLU(inplace=True)]
    out = nn.Conv2d(width, 1, 1)
    nn.init.constant_(out.bias, -2.0)  # start at "about 1 pixel in 8 is altered", as RetinaNet starts its focal loss
    return nn.Sequential(*layers, out)


def segment_input(x, recon):
    import torch

    return torch.cat([x, recon, (x - recon).abs()], dim=1)


def focal_loss(logits, target, gamma: float = 2.0):
    """Binary focal loss (Lin et al., 2017): the many easy normal pixels count little."""
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = (-bce).exp()
    return ((1 - p_true) ** gamma * bce).mean()


def peak(maps):
    """(B, H, W) to (B,): the mean of each map's top PEAK_FRACTION of values."""
    flat = maps.flatten(1)
    k = max(1, round(PEAK_FRACTION * flat.shape[1]))
    return flat.topk(k, dim=1).values.mean(1)


def perlin(height: int, width: int, cells: tuple[int, int], device=None):
    """Perlin gradient noise (H, W), in about [-0.7, 0.7], on a grid of `cells` (rows, columns)."""
    import math

    import torch
    angles = 2 * math.pi * torch.rand(cells[0] + 1, cells[1] + 1, device=device)
    gy, gx = angles.sin(), angles.cos()
    ys = torch.arange(height, device=device) / height * cells[0]
    xs = torch.arange(width, device=device) / width * cells[1]
    iy, ix = ys.long(), xs.long()
    fy, fx = (ys - iy)[:, None], (xs - ix)[None, :]

    def corner(dy: int, dx: int):
        rows, cols = (iy + dy)[:, None], (ix + dx)[None, :]
        return gy[rows, cols] * (fy - dy) + gx[rows, cols] * (fx - dx)

    def fade(t):
        return t * t * t * (t * (6 * t - 15) + 10)

    uy, ux = fade(fy), fade(fx)
    top = corner(0, 0) + ux * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + ux * (corner(1, 1) - corner(1, 0))
    return top + uy * (bottom - top)


def perlin_masks(n: int, height: int, width: int, device=None):
    """(n, 1, H, W) blob-shaped masks: Perlin noise of a random grid per image, thresholded to
    cover between 0.5 % and 15 % of it, so small defects and large ones are both learnt."""
    import torch
    masks = []
    for _ in range(n):
        most = max(1, min(height, width) // 4)  # blobs of at least about 4 pixels
        cells = [min(2 ** int(torch.randint(0, 4, ())), most) for _ in range(2)]
        noise = perlin(height, width, (cells[0], cells[1]), device)
        area = 0.005 + 0.145 * float(torch.rand(()))
        masks.append(noise >= noise.flatten().quantile(1 - area))
    return torch.stack(masks)[:, None]


def jitter(x):
    """Each texture turned, zoomed, shifted and recoloured at random, so it looks foreign even
    when it came from an image like the one it is pasted into."""
    import math

    import torch.nn.functional as F

    import torch
    n, c = x.shape[:2]
    x = x.float()
    angle = 2 * math.pi * torch.rand(n, device=x.device)
    scale = 2 ** (2 * torch.rand(n, device=x.device) - 1)  # half to twice the size
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = scale * angle.cos(), -scale * angle.sin()
    theta[:, 1, 0], theta[:, 1, 1] = scale * angle.sin(), scale * angle.cos()
    theta[:, :, 2] = 2 * torch.rand(n, 2, device=x.device) - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    gain = 0.5 + torch.rand(n, c, 1, 1, device=x.device)
    offset = 0.4 * torch.rand(n, c, 1, 1, device=x.device) - 0.2
    gamma = 2 ** (2 * torch.rand(n, 1, 1, 1, device=x.device) - 1)
    x = (x.clamp(0, 1) ** gamma * gain + offset).clamp(0, 1)
    invert = (torch.rand(n, 1, 1, 1, device=x.device) < 0.2).to(x.dtype)
    return invert * (1 - x) + (1 - invert) * x


def random_crop(texture, size):
    """A crop of `size` (H, W) at a random place; a texture smaller than that is scaled up first."""
    import torch.nn.functional as F

    import torch
    h, w = size
    if texture.shape[-2] < h or texture.shape[-1] < w:
        factor = max(h / texture.shape[-2], w / texture.shape[-1])
        texture = F.interpolate(texture[None], scale_factor=factor, mode="bilinear")[0]
        texture = texture[..., : max(h, texture.shape[-2]), : max(w, texture.shape[-1])]
    top = int(torch.randint(texture.shape[-2] - h + 1, ()))
    left = int(torch.randint(texture.shape[-1] - w + 1, ()))
    return texture[:, top : top + h, left : left + w]


def read_textures(folder: str, channels: int):
    """Up to SOURCE_LIMIT images of a folder, with the model's channels, kept on the CPU."""
    from pathlib import Path

    from aecli.data import open_inputs
    from aecli.data.images import read_image, to_channels

    if not Path(folder).is_dir():
        raise InputError(f"--anomaly-source {folder}: not a folder of images")
    images = open_inputs([folder])
    paths = [images.path(i) for i in range(min(len(images), SOURCE_LIMIT))]
    return [to_channels(read_image(p), channels) for p in paths if p is not None]

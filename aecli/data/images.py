"""Decoding image files to float pixels, and fitting pixels to a model's channels and size."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aecli.errors import InputError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    # imported here, not at the first image: loader workers then inherit it instead of each
    # importing torchvision while the main process waits for its first batch
    from torchvision.io import ImageReadMode, decode_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as PIL's convert("L")


class UnreadableImage(InputError):
    """One image cannot be decoded; training skips it unless --strict."""


def read_image(path: Path) -> torch.Tensor:
    """Decode by content, not by name: (C, H, W) float32 in [0, 1], C in 1..4.

    torchvision's decoders (PNG, JPEG, GIF, WebP) are tried first for speed; Pillow takes
    everything else it knows (BMP, TIFF, CMYK JPEG, palette images).
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UnreadableImage(f"{path}: {e.strerror or e}") from None
    if not data:
        raise UnreadableImage(f"{path}: empty file")
    try:
        with warnings.catch_warnings():  # torchvision 0.29 warns that TorchCodec will take over
            warnings.simplefilter("ignore", DeprecationWarning)
            pixels = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED)
    except (RuntimeError, ValueError):
        pixels = _read_with_pillow(path)
    if pixels.dim() == 4:  # an animated GIF: its first frame
        pixels = pixels[0]
    return _to_unit_float(pixels)


def _read_with_pillow(path: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float32) / (65535.0 if "16" in image.mode else 2**31 - 1)
            else:
                if image.mode not in ("L", "LA", "RGB", "RGBA"):
                    image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
                array = np.array(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        reason = "not an image, or a format this machine cannot decode"
        if not isinstance(e, UnidentifiedImageError):
            reason = f"damaged image ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        raise UnreadableImage(f"{path}: {reason}") from None
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)


def _to_unit_float(pixels: torch.Tensor) -> torch.Tensor:
    if pixels.dtype == torch.uint8:
        return pixels.float().div_(255)
    if pixels.dtype == torch.uint16:
        return pixels.float().div_(65535)
    return pixels.float().clamp_(0, 1)


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(…, C, H, W) with C in 1..4 to the model's 1 or 3 channels; alpha is dropped."""
    c = x.shape[-3]
    if c in (2, 4):
        x, c = x[..., : c - 1, :, :], c - 1
    if c == channels:
        return x
    if channels == 1:
        w = torch.tensor(_GREY_WEIGHTS, dtype=x.dtype).view(3, 1, 1)
        return (x * w).sum(-3, keepdim=True)
    return x.expand(*x.shape[:-3], 3, *x.shape[-2:])


def to_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (…, C, H, W) to size x size with antialiased bilinear filtering.

    Aspect ratio is not kept: a 64x48 image is stretched to the model's square, so no pixel
    of the input is cropped away (what matters for anomaly scores).
    """
    if x.shape[-2:] == (size, size):
        return x
    batch = x if x.dim() == 4 else x.unsqueeze(0)
    out = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.clamp_(0, 1) if x.dim() == 4 else out[0].clamp_(0, 1)

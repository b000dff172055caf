"""Decoding image files to float pixels, and fitting pixels to a model's channels and size."""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aecli.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as PIL's convert("L")
MAX_PIXELS = 100_000_000  # a 10k x 10k photo; its float RGB copy takes 1.2 GB. --max-pixels moves it


class UnreadableImage(InputError):
    """One image cannot be decoded (or is too large); --skip-bad skips it with a warning."""


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Decode by content, not by name: (C, H, W) float32 in [0, 1], C in 1..4.

    The header's size is checked against `max_pixels` before any pixel is decoded, so a
    small file claiming 100,000 x 100,000 pixels costs nothing. torchvision decodes JPEG, GIF
    and WebP (2-3x faster than Pillow on small images); Pillow takes the rest: PNG, because
    torchvision's PNG decoder crashes the process on damaged data (see docs/reliability.md),
    BMP, TIFF, CMYK, and JPEGs cut short, which libjpeg would fill with grey.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block, a device never end
            raise UnreadableImage(f"{path}: not a regular file")
        data = path.read_bytes()
    except OSError as e:
        raise UnreadableImage(f"{path}: {e.strerror or e}") from None
    if not data:
        raise UnreadableImage(f"{path}: empty file")
    size = header_size(data)
    if size is not None:
        _check_pixels(path, *size, max_pixels)
    if not _safe_for_torchvision(data):
        return _to_unit_float(_read_with_pillow(data, path, max_pixels))
    decode_image, unchanged = torchvision_decoder()
    try:
        with warnings.catch_warnings():  # torchvision 0.29 warns that TorchCodec will take over
            warnings.simplefilter("ignore", DeprecationWarning)
            pixels = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), unchanged)
    except (RuntimeError, ValueError):
        pixels = _read_with_pillow(data, path, max_pixels)
    if pixels.dim() == 4:  # an animated GIF: its first frame
        pixels = pixels[0]
    if pixels.shape[0] == 4 and data[:2] == b"\xff\xd8":  # CMYK, not RGBA: Pillow converts it
        pixels = _read_with_pillow(data, path, max_pixels)
    return _to_unit_float(pixels)


TORCHVISION_SUFFIXES = {".jpg", ".jpeg", ".gif", ".webp"}  # what it may decode (see _safe_for_torchvision)


def torchvision_decoder():
    """torchvision's decode_image and its UNCHANGED mode, imported at the first image it decodes.

    Importing torchvision takes about 2 s (its package imports torch._dynamo), which PNG folders,
    arrays and `ae info` never need. data.loader imports it before starting loader workers when
    the inputs hold such files, so the workers inherit it instead of each importing it again.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_image
    return decode_image, ImageReadMode.UNCHANGED


def _safe_for_torchvision(data: bytes) -> bool:
    """A whole JPEG (ending in its end marker), a GIF or a WebP: what torchvision decodes safely."""
    if data[:2] == b"\xff\xd8":  # the end marker, perhaps padded with zeros (rstrip copies: only then)
        return data.endswith(b"\xff\xd9") or data.rstrip(b"\0").endswith(b"\xff\xd9")
    return data[:6] in (b"GIF87a", b"GIF89a") or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise UnreadableImage(
            f"{path}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(raise it with --max-pixels)"
        )


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, GIF, BMP, WebP or JPEG header; None for other formats."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:2] == b"BM":
            if struct.unpack("<I", data[14:18])[0] == 12:  # the old OS/2 header: 16-bit sizes
                return struct.unpack("<HH", data[18:22])
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)  # negative height: rows stored top-down
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:2] == b"\xff\xd8":
            frame = jpeg_frame(data)
            return frame[:2] if frame else None
    except struct.error:  # too short to hold the header it starts: the decoder will say more
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, colour components) from a JPEG's frame header, found by walking its marker
    segments; None where there is none. 4 components are CMYK, which only Pillow converts."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in _JPEG_FRAMES:
            height, width, components = struct.unpack(">HHB", data[i + 5 : i + 10])
            return width, height, components
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def _read_with_pillow(data: bytes, path: Path, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Pillow decodes the bytes already read (not the file again); `path` names it in errors."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = _open_with_pillow(data)
    except Image.DecompressionBombError:
        raise UnreadableImage(f"{path}: over Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UnreadableImage(f"{path}: {_pillow_reason(e)}") from None
    _check_pixels(path, *image.size, max_pixels)
    try:
        with image:
            if image.mode.startswith("I"):
                array = _integer_samples(data, image)
            elif image.format == "PNG" and image.tile and image.tile[0][3] in _PNG16_COLOUR:
                array = _png16_colour(data, image.tile[0][3]).astype(np.float32) / 65535
            else:
                if image.mode not in ("L", "LA", "RGB", "RGBA"):
                    image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
                array = np.array(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as e:
        raise UnreadableImage(f"{path}: {_pillow_reason(e)}") from None
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)


def _open_with_pillow(data: bytes):
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
        return Image.open(io.BytesIO(data))


def _integer_samples(data: bytes, image) -> np.ndarray:
    """Pillow's integer modes to [0, 1] by the range the file stores, not by the mode.

    Some Pillow versions open 16-bit grey PNGs as 32-bit mode "I", and dividing those by
    2^31 - 1 leaves them nearly black; unsigned 32-bit TIFFs arrive wrapped into int32.
    """
    bits, signed = _sample_format(data, image)
    array = np.asarray(image)
    if bits == 32 and not signed:
        array = array.view(np.uint32)
    return np.clip(array.astype(np.float32) / (2 ** (bits - signed) - 1), 0, 1)


def _sample_format(data: bytes, image) -> tuple[int, bool]:
    """(bits per sample, signed) as the file stores them: the PNG header, TIFF's tags, else the mode."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data[24], False  # IHDR's bit depth; PNG samples are unsigned
    if image.format == "TIFF":
        bits, sample_format = image.tag_v2.get(258, 1), image.tag_v2.get(339, 1)  # BitsPerSample, SampleFormat
        bits = bits[0] if isinstance(bits, tuple) else bits
        sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
        if bits in (16, 32):
            return bits, sample_format == 2
    return (16, False) if "16" in image.mode else (32, True)


# Pillow has no 16-bit colour modes, so it keeps only the high byte of each sample of these PNGs.
_PNG16_COLOUR = {"RGB;16B", "RGBA;16B", "LA;16B"}


def _png16_colour(data: bytes, rawmode: str) -> np.ndarray:
    """A 16-bit colour or grey+alpha PNG at full depth: (H, W, C) uint16.

    Pillow's decoder reads the stream again with a raw mode of the same pixel size that
    keeps the other byte of each sample: a little-endian one for RGB(A), while grey+alpha
    read as 8-bit RGBA keeps all four bytes. Damaged data still raises, as Pillow does.
    """
    if rawmode == "LA;16B":
        both = _decode_png_as(data, "RGBA")
        high, low = both[..., 0::2], both[..., 1::2]
    else:
        high, low = _decode_png_as(data, rawmode), _decode_png_as(data, rawmode.replace("16B", "16L"))
    return high.astype(np.uint16) << 8 | low


def _decode_png_as(data: bytes, rawmode: str) -> np.ndarray:
    with _open_with_pillow(data) as image:
        image.tile = [(name, box, offset, rawmode) for name, box, offset, _ in image.tile]
        return np.asarray(image)


def _pillow_reason(e: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return "not an image, or a format this machine cannot decode"
    return f"damaged image ({str(e).splitlines()[0] if str(e) else type(e).__name__})"


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
        w = torch.tensor(_GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * w).sum(-3, keepdim=True)
    return x.expand(*x.shape[:-3], 3, *x.shape[-2:])


def to_size(x: torch.Tensor, size: int, mode: str = "stretch") -> torch.Tensor:
    """Fit (…, C, H, W) to size x size, resampled with antialiased bilinear filtering.

    pad: the longer side to `size`, the shorter one padded with its edge pixels; the aspect ratio
         is kept and no pixel is lost, so a defect at the border still counts.
    crop: the shorter side to `size`, the centre cut out; aspect kept, the margins lost.
    stretch: each side to `size`; nothing lost, the shapes distorted.
    """
    if x.shape[-2:] == (size, size):
        return x
    batch = x if x.dim() == 4 else x.unsqueeze(0)
    (h, w), top, left = layout(*x.shape[-2:], size, mode)
    if (h, w) != tuple(x.shape[-2:]):
        batch = F.interpolate(batch, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    if mode == "pad":
        batch = F.pad(batch, (left, size - w - left, top, size - h - top), mode="replicate")
    elif mode == "crop":
        batch = batch[..., -top : -top + size, -left : -left + size]
    return batch if x.dim() == 4 else batch[0]


def layout(h: int, w: int, size: int, mode: str) -> tuple[tuple[int, int], int, int]:
    """The size an h x w image is scaled to when fitted to a size x size square, and where it
    sits (top, left): inside the square for pad, around it (negative offsets) for crop."""
    if mode == "stretch":
        return (size, size), 0, 0
    if mode == "pad":  # the longer side to size: the other no longer than it
        scale = size / max(h, w)
        h, w = min(size, max(1, round(h * scale))), min(size, max(1, round(w * scale)))
    else:  # crop: the shorter side to size, the other no shorter than it
        scale = size / min(h, w)
        h, w = max(size, round(h * scale)), max(size, round(w * scale))
    return (h, w), (size - h) // 2, (size - w) // 2

"""The README's picture, from an `ae demo` folder: denoising, VAE samples and the latent map side by side.

    python scripts/readme_picture.py demo-out        # writes docs/images/demo.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

HEIGHT = 360  # every panel is scaled to this height; pixel art stays sharp (nearest neighbour)


def panel(path: Path, caption: str, sharp: bool) -> Image.Image:
    image = Image.open(path).convert("RGB")
    width = round(image.width * HEIGHT / image.height)
    image = image.resize((width, HEIGHT), Image.NEAREST if sharp else Image.LANCZOS)
    framed = Image.new("RGB", (width, HEIGHT + 28), "white")
    framed.paste(image, (0, 28))
    ImageDraw.Draw(framed).text((4, 8), caption, fill="black")
    return framed


def main() -> None:
    demo = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out")
    panels = [
        panel(demo / "denoised.png", "ae denoise: noisy / denoised / clean", sharp=True),
        panel(demo / "vae-samples.png", "ae sample: new images from a VAE", sharp=True),
        panel(demo / "latent-map.png", "ae encode --plot: the latent space", sharp=False),
    ]
    gap = 16
    out = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), panels[0].height), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    target = Path(__file__).resolve().parent.parent / "docs" / "images" / "demo.png"
    out.save(target, optimize=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

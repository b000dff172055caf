#!/usr/bin/env bash
# Through the bottleneck and back: `ae encode` to stdout, `ae decode -` from stdin. In between,
# latents are plain numbers: here numpy averages each class's latents and the decoder draws the
# average sneaker, the average bag, and so on.
#
#   examples/roundtrip.sh [OUT]         # AE=/path/to/ae, PYTHON=/path/to/python (with aecli); EPOCHS=N
set -euo pipefail
AE=${AE:-ae}
PYTHON=${PYTHON:-python3}
EPOCHS=${EPOCHS:-10}
OUT=${1:-roundtrip-out}
mkdir -p "$OUT"

# A plain autoencoder with the conv arch (the default for ae): its decoder runs from a latent alone.
"$AE" train sample -o "$OUT/ae.safetensors" --epochs "$EPOCHS" -q

# Encode | decode: 50 test images (bags) come back through 32 numbers each, as PNGs and a grid.
"$AE" encode sample:test:class=8 -m "$OUT/ae.safetensors" -q \
    | "$AE" decode - -m "$OUT/ae.safetensors" -o "$OUT/decoded" --grid "$OUT/decoded.png" -q

# Latent arithmetic in between: the mean latent of each class, decoded (one image per class, in order).
"$AE" encode sample:test -m "$OUT/ae.safetensors" -q \
    | "$PYTHON" -c '
import io, sys

import numpy as np

from aecli.data.named import open_named  # the class of each test image

z = np.load(io.BytesIO(sys.stdin.buffer.read()))
labels = open_named("sample:test").labels
np.save(sys.stdout.buffer, np.stack([z[labels == k].mean(0) for k in range(10)]))
' \
    | "$AE" decode - -m "$OUT/ae.safetensors" --grid "$OUT/class-means.png" --nrow 10 -q
echo "done: $OUT/decoded.png (round trip) and $OUT/class-means.png (one average image per class)"

#!/usr/bin/env bash
# Latents for other tools: `ae encode` writes one float32 row per image to stdout (npy), which
# numpy loads as is; here a few lines of numpy cluster them (k-means) and check the clusters
# against the sample's true classes, which the model never saw.
#
#   examples/latent-clusters.sh [OUT]   # AE=/path/to/ae, PYTHON=/path/to/python (with aecli); EPOCHS=N
set -euo pipefail
AE=${AE:-ae}
PYTHON=${PYTHON:-python3}
EPOCHS=${EPOCHS:-10}
OUT=${1:-latent-clusters-out}
mkdir -p "$OUT"

"$AE" train sample --latent-dim 16 --epochs "$EPOCHS" -o "$OUT/ae.safetensors" -q

# Latents go to stdout (or -o FILE); --index writes each row's source, one per line. Here tee keeps
# a copy and a pipe shows the shape: numpy reads a pipe whole first. (--format csv or jsonl suit
# tools other than numpy.)
"$AE" encode sample:test -m "$OUT/ae.safetensors" --index "$OUT/rows.txt" -q \
    | tee "$OUT/latents.npy" \
    | "$PYTHON" -c 'import io, sys, numpy; z = numpy.load(io.BytesIO(sys.stdin.buffer.read())); print("latents:", z.shape, z.dtype)'

"$PYTHON" - "$OUT/latents.npy" <<'PY'
import sys

import numpy as np

from aecli.data.named import CLASS_NAMES, open_named  # the true classes, only to judge the clusters

z = np.load(sys.argv[1])
labels = open_named("sample:test").labels
z = (z - z.mean(0)) / (z.std(0) + 1e-8)
rng = np.random.default_rng(0)
k = 10
centres = z[rng.choice(len(z), k, replace=False)]
for _ in range(50):  # k-means: assign each row to its nearest centre, move each centre to its rows' mean
    nearest = ((z[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    centres = np.stack([z[nearest == c].mean(0) if (nearest == c).any() else centres[c] for c in range(k)])
print(f"{len(z)} latents of {z.shape[1]} numbers in {k} clusters; each cluster's most common class:")
purity = 0
for c in range(k):
    members = labels[nearest == c]
    if len(members) == 0:
        continue
    top = np.bincount(members, minlength=10).argmax()
    share = (members == top).mean()
    purity += (members == top).sum()
    print(f"  cluster {c}: {len(members):3d} images, {share:4.0%} {CLASS_NAMES[top]}")
print(f"purity {purity / len(z):.0%} (a random split into {k} groups scores about 10 %)")
PY

#!/usr/bin/env bash
# Clean up a folder of noisy images: `ae denoise DIR -o OUT` mirrors the folder's layout as PNGs,
# measures the result against clean originals if given, and refuses to write into its input.
#
#   examples/denoise-folder.sh [OUT]    # AE=/path/to/ae if ae is not on PATH; EPOCHS=N
#   TRAIN=./my-clean-images examples/denoise-folder.sh   # train on your own clean images instead
set -euo pipefail
AE=${AE:-ae}
EPOCHS=${EPOCHS:-3}
TRAIN=${TRAIN:-sample}
OUT=${1:-denoise-folder-out}
mkdir -p "$OUT"

# A denoiser (a unet, the default for --variant denoising) trained on noise of std 0.2.
"$AE" train "$TRAIN" --variant denoising --sigma 0.2 --epochs "$EPOCHS" -o "$OUT/dae.safetensors" -q

# A folder of noisy pictures to clean: here ae makes one from 150 held-out images, adding noise
# and saving the noisy copies (it denoises them too, into direct/, as a first look).
"$AE" denoise sample:test:class=0,1,8 -m "$OUT/dae.safetensors" --add-noise 0.2 --seed 1 \
    --save-noisy "$OUT/noisy" -o "$OUT/direct" -q

# The real thing: denoise the folder. --reference compares with the clean originals (a dataset
# matches by position, a folder by relative path) and prints PSNR and SSIM before and after.
"$AE" denoise "$OUT/noisy" -m "$OUT/dae.safetensors" -o "$OUT/clean" \
    --reference sample:test:class=0,1,8 --report "$OUT/quality.csv" --grid "$OUT/before-after.png"

# Writing into the input folder is refused (exit status 1) unless --overwrite.
if "$AE" denoise "$OUT/noisy" -m "$OUT/dae.safetensors" -o "$OUT/noisy" -q 2> "$OUT/refused.txt"; then
    echo "expected ae denoise to refuse to write into its input folder" >&2
    exit 1
fi
echo "refused, as it should be: $(cat "$OUT/refused.txt")"
echo "done: $(find "$OUT/clean" -name '*.png' | wc -l | tr -d ' ') denoised PNGs in $OUT/clean/; $OUT/before-after.png"

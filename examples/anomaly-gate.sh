#!/usr/bin/env bash
# Anomaly detection as a gate for scripts, cron and CI: learn what normal looks like, then let
# `ae score --fail-on-anomaly` decide with its exit status (0 nothing flagged, 3 something flagged,
# 1 or 2 an error). On the bundled sample: sneakers are normal, every other class is an anomaly.
#
#   examples/anomaly-gate.sh [OUT]      # AE=/path/to/ae if ae is not on PATH; EPOCHS=N
set -euo pipefail
AE=${AE:-ae}
EPOCHS=${EPOCHS:-20}
OUT=${1:-anomaly-gate-out}
mkdir -p "$OUT"

# 1. Train on normal images only (class 7 of the sample: 200 sneakers). The model file also keeps
#    the scores of held-out normal images, from which `--threshold auto` (the default) is taken.
"$AE" train sample:class=7 --epochs "$EPOCHS" -o "$OUT/sneakers.safetensors" -q

# 2. How well do scores separate normal from anomalous? Given labels, `ae score` prints AUROC,
#    average precision and F1 on stderr; the scores, one CSV row per image, go to the file.
"$AE" score sample:test -m "$OUT/sneakers.safetensors" --labels class=7 -o "$OUT/scores.csv"

# 3. The gate. Its exit status is the whole interface: here it picks the message.
gate() {  # gate NAME INPUTS...: score a batch; returns ae's exit status
    local name=$1 status=0
    shift
    "$AE" score "$@" -m "$OUT/sneakers.safetensors" --fail-on-anomaly -q -o "$OUT/$name.csv" || status=$?
    case $status in
        0) echo "$name: passed, nothing flagged" ;;
        3) echo "$name: $(awk -F, 'NR > 1 && $4 == "true" {n++} END {print n + 0}' "$OUT/$name.csv") image(s) flagged; see $OUT/$name.csv" ;;
        *) echo "$name: ae score failed (exit status $status)" >&2 ;;
    esac
    return "$status"
}

# New sneakers: few or none flagged (the auto threshold allows 1 % false alarms on normal images).
gate new-sneakers sample:test:class=7 || [ $? -eq 3 ]
# A batch of bags must fail the gate: anything but exit status 3 is a surprise.
status=0
gate bags sample:test:class=8 || status=$?
if [ "$status" -ne 3 ]; then
    echo "expected the bags to be flagged (exit status 3), got $status" >&2
    exit 1
fi
echo "done: the results are in $OUT/"

#!/usr/bin/env bash
# The one command file run on a lent GPU machine, from the repository root (issue 17):
#   bash benchmarks/gpu_device.sh
# It needs .whl/ (typer and its pydantic dependencies, installed offline) and .gpu/ (Fashion-MNIST)
# carried beside the working tree, and writes what it measures under $OUT. No `set -e`: the
# benchmark runs even when the tests fail.
set -u
OUT=${OUT:-$(mktemp -d)}

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD \
    || { echo "installing .whl/ failed: going on without it" >&2; export PYTHONPATH=$PWD; }
export AE_DATA_DIR=$PWD/.gpu AE_CACHE_DIR=/tmp/aecache PYTHONUNBUFFERED=1

nvidia-smi 2>&1 | tee "$OUT/nvidia_smi.txt"

tests=()
for t in tests/test_gpu.py tests/test_gpu_streaming.py; do
    [ -f "$t" ] && tests+=("$t")
done
if [ ${#tests[@]} -gt 0 ]; then
    timeout 100 python3 -m pytest -q -p no:cacheprovider "${tests[@]}" -x 2>&1 | tee "$OUT/gpu_tests.log"
else
    echo "no GPU tests here" | tee "$OUT/gpu_tests.log"
fi

# Streaming and the plain layout were measured on two H100s (docs/benchmarks.md); their rows are left
# out so that the compile rows, never measured yet, get the 90 s they need within the budget.
timeout 330 python3 benchmarks/gpu.py --out "$OUT" --skip "preload=no,channels_last=no" 2>&1 | tee "$OUT/gpu_bench.log"
echo "benchmark exit: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu_bench.log"

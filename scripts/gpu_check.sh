#!/usr/bin/env bash
# aelab's GPU checks in one command, under 8 minutes on one GPU, ending in one table:
#   1. the tests that need a CUDA GPU (the dataset kept on the GPU, bf16-mixed, no host sync inside a
#      training call, the same weights for steps_per_call 1 and the default);
#   2. the GPU rows of scripts/bench_train.py: conv and MLP autoencoders, batch 256 and 1024, fp32 and
#      bf16-mixed, aelab with steps_per_call 1 and the default, against a bare PyTorch loop.
#
#   scripts/gpu_check.sh              # on a machine with a CUDA GPU and Fashion-MNIST installed
#   scripts/gpu_check.sh --dry-run    # what it would run, without a GPU (tests/test_steps.py checks this)
#   IMAGES=20000 scripts/gpu_check.sh # fewer timed images per measurement (default 50000)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
IMAGES=${IMAGES:-50000}
TEST_CMD=("$PY" -m pytest -q -p no:cacheprovider -m "not slow" -k gpu tests/test_steps.py tests/test_ddp.py)
BENCH_CMD=("$PY" scripts/bench_train.py --devices cuda --nets conv,mlp --batches 256,1024
           --precisions 32-true,bf16-mixed --rounds 1 --images "$IMAGES" --no-ddp)

if [[ "${1:-}" == "--dry-run" ]]; then
    echo "tests: ${TEST_CMD[*]}"
    echo "bench: ${BENCH_CMD[*]}"
    exec "${BENCH_CMD[@]}" --dry-run
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); --dry-run shows what it runs" >&2
    exit 1
fi
started=$(date +%s)
logs=$(mktemp -d)
timeout 150 "${TEST_CMD[@]}" >"$logs/tests.log" 2>&1
tests_status=$?
timeout 330 "${BENCH_CMD[@]}" >"$logs/bench.log" 2>&1
bench_status=$?
device=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))")
echo
"$PY" scripts/bench_train.py --gpu-table "$logs/tests.log" "$logs/bench.log" "$device" "$(( $(date +%s) - started ))"
echo "(logs: $logs)"
[[ $tests_status -eq 0 && $bench_status -eq 0 ]]

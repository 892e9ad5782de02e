#!/usr/bin/env bash
# Ablation "disentanglement_beta": the sweep, then aelab-compare. Arguments pass through
# (e.g. --scale full, --n-jobs 2, -- trainer=gpu). See scripts/run_ablation.py.
# Outputs land in ./outputs/sweeps/ of the folder you run it from (or $AELAB_ROOT/outputs), not in the checkout.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
exec "${PYTHON:-$here/.venv/bin/python}" "$here/scripts/run_ablation.py" disentanglement_beta "$@"

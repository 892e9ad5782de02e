#!/usr/bin/env bash
# Ablation "bottleneck_overfitting": the sweep, then aelab-compare. Arguments pass through
# (e.g. --scale full, --n-jobs 2, -- trainer=gpu). See scripts/run_ablation.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-.venv/bin/python}" scripts/run_ablation.py bottleneck_overfitting "$@"

#!/usr/bin/env python
"""Sweep benchmark: the same 4-job sweep run sequentially and with the joblib launcher (2 jobs).

Each job trains a small MLP autoencoder (784-256-b-256-784) on a Fashion-MNIST subset for
12 epochs at batch size 32
(bottleneck 4, 8, 16, 32). Both sweeps are timed end to end as a user runs
them (``aelab-train -m ...``), one after the other on this machine. With
joblib each job gets cores / n_jobs torch threads.

    .venv/bin/python scripts/bench_sweep.py [--n-jobs 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = [
    "model=mlp",
    "model.encoder.hidden=[256]",
    "model.bottleneck=4,8,16,32",
    "trainer.max_epochs=12",
    "data.limit_train=6000",
    "data.limit_val=1000",
    "data.limit_test=1000",
    "data.batch_size=32",
    "callbacks.progress_bar=null",
    "callbacks.reconstruction_grid=null",
    "trainer.enable_model_summary=false",
]


def run_sweep(extra: list[str], root: Path) -> float:
    exe = Path(sys.executable).parent / "aelab-train"
    env = dict(os.environ, AELAB_ROOT=str(root), WANDB_MODE="offline")
    start = time.perf_counter()
    result = subprocess.run([str(exe), "-m", *JOB, *extra], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0 or "4 done, 0 failed" not in result.stdout + result.stderr:
        sys.stderr.write(result.stdout[-2000:] + result.stderr[-4000:])
        raise SystemExit("the benchmark sweep failed")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        sequential = run_sweep(["sweep.name=sequential"], root)
        parallel = run_sweep(
            ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}", "sweep.name=parallel"], root
        )
    print(
        f"4-job sweep (MLP 784-256-b autoencoder, 6k Fashion-MNIST images, batch 32, 12 epochs each), "
        f"{os.cpu_count()} cores"
    )
    print(f"  sequential (basic launcher)      : {sequential:7.1f} s")
    print(f"  joblib launcher, n_jobs={args.n_jobs}        : {parallel:7.1f} s")
    print(f"  ratio parallel / sequential      : {parallel / sequential:7.2f}  (target <= 0.7)")


if __name__ == "__main__":
    main()

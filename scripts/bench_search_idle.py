"""How long an Optuna search's slots idle when its trials differ in length.

    python scripts/bench_search_idle.py [--trials 12] [--jobs 2] [--dir DIR]

Runs ``aelab-train -m hparams_search=bottleneck_optuna`` with Hydra's joblib launcher, ``--jobs`` trials at
once, on small sprites runs whose length Optuna picks (``trainer.max_epochs`` from 1 to 12), then reads each
job's record (its wall time and when it finished) and prints the share of the slots' time in which a slot
ran no job: while trials were still to start (what a search that waits for a whole batch wastes), and over
the whole search (which adds the end, when the last trials run and the other slots have nothing left).
It reads only the job folders, so it measures any aelab version: run it with another checkout first on
``PYTHONPATH`` for the figure before a change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRIAL = [
    "data=sprites",
    "data.num_train=2000",
    "data.val_size=200",
    "data.num_test=200",
    "data.batch_size=64",
    "model=mlp",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "search.pruner=none",
    "hydra/launcher=joblib",
]


def idle_shares(intervals: list[tuple[float, float]], slots: int) -> tuple[float, float]:
    """``(idle while trials were to start, idle over the whole search)`` of ``slots`` running ``intervals``."""
    first, last_start, last_end = (
        min(s for s, _ in intervals),
        max(s for s, _ in intervals),
        max(e for _, e in intervals),
    )
    busy_before = sum(max(0.0, min(e, last_start) - max(s, first)) for s, e in intervals)
    busy = sum(e - s for s, e in intervals)
    return 1 - busy_before / (slots * (last_start - first)), 1 - busy / (slots * (last_end - first))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where outputs/ goes (default: a temporary folder)")
    args = parser.parse_args()
    where = args.dir or Path(tempfile.mkdtemp(prefix="aelab-bench-search-"))
    command = [
        str(Path(sys.executable).parent / "aelab-train"),
        "-m",
        "hparams_search=bottleneck_optuna",
        *TRIAL,
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.n_jobs={args.jobs}",
        f"hydra.launcher.n_jobs={args.jobs}",
        "trainer.max_epochs=int(interval(1,12))",  # a search parameter besides the config's
        "sweep.name=idle",
    ]
    started = time.time()
    done = subprocess.run(
        command, cwd=where, env=dict(os.environ, WANDB_MODE="offline"), capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"the search failed:\n{done.stderr[-3000:]}")
    wall = time.time() - started
    records = [json.loads(p.read_text()) for p in (where / "outputs" / "sweeps" / "idle").glob("*/metrics.json")]
    intervals = [(r["finished_at_unix"] - r["wall_time_s"], r["finished_at_unix"]) for r in records]
    before_last, whole = idle_shares(intervals, args.jobs)
    epochs = sorted(r["epochs"] for r in records)
    lengths = f"{epochs[0]} to {epochs[-1]} epochs"
    print(f"{len(records)} trials ({lengths}) on {args.jobs} slots, {wall:.0f} s")
    print(f"slots idle while trials were to start: {before_last:.1%}; over the whole search: {whole:.1%}")


if __name__ == "__main__":
    main()

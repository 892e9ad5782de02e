#!/usr/bin/env python
"""Jobs side by side: K ``aelab-train`` jobs started at once on this machine, each one's training phase against
the same job alone.

A researcher's machine often runs two jobs from two terminals, a notebook beside a sweep, a sweep beside tests.
Each job here is a whole ``aelab-train`` process on its own pseudo-terminal (as in a terminal: progress bar,
start-up and default callbacks included), the K of a trial launched together. A job's **training phase** is its
first training batch → end of fit (``metrics.json`` → ``timing``); its **wall** is launch → exit. Both are divided
by the same side's one-alone figure of the same round; the table gives the median over rounds of the mean and of
the worst of the K jobs.

Sides (alternating within a round):

* **aelab** — the defaults: each job's torch threads are the usable cores shared by the aelab jobs running (looked
  at again every second while training), libgomp's own spin — :mod:`aelab.run.threads`;
* **bounded** (``--sides aelab,bounded``) — aelab's thread share with OpenMP's spin bounded
  (``GOMP_SPINCOUNT=10000``, aelab's default from 2026-12-07 until the next change): what the bound does beside
  the share;
* **fixed** (``--sides aelab,fixed``) — ``threads=<cores>`` given (no share), which bounds the spin: what the bound
  alone does for jobs whose threads are fixed;
* **before** — what each job did before, and what any PyTorch process does by default: ``threads=<cores>`` and
  libgomp's default spin (``GOMP_SPINCOUNT=300000``, its figure when the variable is unset). A job of this side
  still running after ``--timeout`` seconds is killed and shown as "> timeout".

One alone (K = 1), the two sides are paired per round: their ratio says whether the defaults cost a job that has
the machine to itself anything.

    .venv/bin/python scripts/bench_concurrent.py [--job vae] [--k 1,2,3] [--rounds 2] [--sides aelab,before]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_e2e import JOBS, aelab_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aelab.run.threads import SPIN_COUNT, usable_cores  # noqa: E402 — the repository's aelab, as the jobs run it

#: the sides: (environment added, overrides added)
SIDES = {
    "aelab": ({}, ()),
    "bounded": ({"GOMP_SPINCOUNT": SPIN_COUNT}, ()),  # aelab's thread share with OpenMP's spin bounded
    "before": ({"GOMP_SPINCOUNT": "300000"}, ("threads={cores}",)),
    "fixed": ({}, ("threads={cores}",)),  # every core for each job (threads= given: aelab bounds the spin)
}


def side_setup(side: str, env: dict) -> tuple[dict, tuple[str, ...]]:
    added, overrides = SIDES[side]
    return dict(env, **added), tuple(o.format(cores=usable_cores()) for o in overrides)


def trial(job: str, side: str, k: int, work: Path, env: dict, timeout: float) -> list[dict | None]:
    """K jobs launched together; each one's figures, or None for a job killed at ``timeout``."""
    env, extra = side_setup(side, env)
    out = Path(tempfile.mkdtemp(prefix=f"{side}-k{k}-", dir=work))

    def one(i: int) -> dict | None:
        try:
            return aelab_run(job, out, env, f"job{i}", extra, timeout=timeout)
        except TimeoutError:
            return None

    with ThreadPoolExecutor(k) as pool:
        rows = list(pool.map(one, range(k)))
    shutil.rmtree(out, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", default="vae", choices=sorted(JOBS))
    parser.add_argument("--k", default="1,2,3", help="how many jobs at once, each a trial")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sides", default="aelab,before", help=f"of {', '.join(SIDES)}")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a job is killed")
    args = parser.parse_args()
    ks = sorted({int(k) for k in args.k.split(",")} | {1})
    sides = [s for s in args.sides.split(",") if s]
    env = dict(
        os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1", COLUMNS="120", TERM=os.environ.get("TERM", "xterm")
    )
    for key in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "WANDB_SERVICE"):
        env.pop(key, None)
    work = Path(tempfile.mkdtemp(prefix="aelab-bench-concurrent-"))
    results: dict[tuple[str, int], list[list[dict | None]]] = {}
    try:
        for r in range(args.rounds):
            for side in sides if r % 2 == 0 else sides[::-1]:
                for k in ks:
                    rows = trial(args.job, side, k, work, env, args.timeout)
                    results.setdefault((side, k), []).append(rows)
                    shown = ", ".join(f"{x['training']:.1f} ({x['threads']})" if x else "killed" for x in rows)
                    print(f"round {r + 1}, {side}, K={k}: training (threads used) {shown} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    overrides, epochs = JOBS[args.job]
    print(
        f"\n{args.job} ({' '.join(overrides)}, {epochs} epochs, Fashion-MNIST, test=false); {usable_cores()} usable "
        f"cores, median of {args.rounds} round(s); each job's training phase (first batch → end of fit) and wall "
        "(launch → exit) divided by the same side's job alone in the same round:"
    )
    print("| side | K jobs at once | training, one alone (s) | training ÷ alone: mean / worst | wall ÷ alone: worst |")
    print("|---|---|---|---|---|")
    for side in sides:
        for k in ks:
            mean_r, worst_r, wall_r, alone_s = [], [], [], []
            for r, rows in enumerate(results[(side, k)]):
                alone = results[(side, 1)][r][0]
                if alone is None:
                    continue
                alone_s.append(alone["training"])
                if any(x is None for x in rows):
                    worst_r.append(float("inf"))
                    mean_r.append(float("inf"))
                    wall_r.append(float("inf"))
                    continue
                ratios = [x["training"] / alone["training"] for x in rows]
                mean_r.append(statistics.mean(ratios))
                worst_r.append(max(ratios))
                wall_r.append(max(x["wall"] for x in rows) / alone["wall"])

            def fmt(values: list[float]) -> str:
                if not values:
                    return "—"
                m = statistics.median(values)
                return f"> {args.timeout:.0f} s (killed)" if m == float("inf") else f"{m:.2f}×"

            alone_txt = f"{statistics.median(alone_s):.1f}" if alone_s else "killed"
            print(f"| {side} | {k} | {alone_txt} | {fmt(mean_r)} / {fmt(worst_r)} | {fmt(wall_r)} |")
    first = sides[0]
    for other in sides[1:]:
        pairs = [
            a[0]["training"] / b[0]["training"]
            for a, b in zip(results[(first, 1)], results[(other, 1)])
            if a[0] and b[0]
        ]
        if pairs:
            print(
                f"one alone, {first} ÷ {other} (training phase, paired per round): median "
                f"{statistics.median(pairs):.3f} ({', '.join(f'{p:.3f}' for p in pairs)})"
            )
    print(f"bounded spin (threads= given; the 'bounded' side): GOMP_SPINCOUNT={SPIN_COUNT}; libgomp's own: 300000")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""What reading a run folder as data costs (docs/trust.md): the weights-only checkpoint load against full pickle,
and the config allowlist check against the whole ``load_run`` (without the data's set-up), measured in one process,
alternating, the best of 3 rounds.

    .venv/bin/python scripts/bench_trust.py outputs/runs/<run> [--repeats 30]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def mean_seconds(fn, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a trained run folder")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import torch

    from aelab.run.load import check_run_config, load_run
    from aelab.store.checkpoints import load_checkpoint
    from aelab.store.runs import checkpoint_path, load_run_config

    run = Path(args.run)
    ckpt = checkpoint_path(run, "last")
    cfg = load_run_config(run)
    load_checkpoint(ckpt), torch.load(ckpt, weights_only=False), load_run(run, setup_data=False)  # warm up
    safe, full, check, whole = [], [], [], []
    for _ in range(3):
        safe.append(mean_seconds(lambda: load_checkpoint(ckpt), args.repeats))
        full.append(mean_seconds(lambda: torch.load(ckpt, map_location="cpu", weights_only=False), args.repeats))
        check.append(mean_seconds(lambda: check_run_config(cfg, run), args.repeats))
        whole.append(mean_seconds(lambda: load_run(run, setup_data=False), max(1, args.repeats // 6)))
    safe, full, check, whole = min(safe), min(full), min(check), min(whole)
    print(
        f"RESULT {ckpt.name} ({ckpt.stat().st_size / 2**20:.1f} MiB): weights-only load {safe * 1e3:.2f} ms, "
        f"full pickle {full * 1e3:.2f} ms (ratio {safe / full:.2f}); config check {check * 1e3:.2f} ms = "
        f"{check / whole * 100:.1f} % of load_run ({whole * 1e3:.0f} ms, data not set up)"
    )


if __name__ == "__main__":
    main()

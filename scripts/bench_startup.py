#!/usr/bin/env python
"""Start-up: how long ``aelab-train`` takes to answer without training — ``--help`` and each refusal — as a whole
process, launch to exit, and which of torch and Lightning it imported.

Cases (each a fresh ``aelab-train`` process in a scratch folder):

* ``--help``;
* an unknown key: ``model.bottlenek=8``;
* a bad value: ``model.optimizer.lr=-1`` (torch's own check of the learning rate);
* a live run folder: ``name=busy`` while another process holds the folder (this script holds its lock, as a training
  run does, so no training competes for the cores);
* a completed run skipped: ``name=done`` again after a tiny sprites run completed (trained once per source tree).

With ``--before DIR`` (another source tree of aelab, e.g. ``git archive <commit> | tar -x -C DIR``) every case runs
with both trees, alternating within each round (reversed in odd rounds), through the same console script with
``PYTHONPATH`` pointing at the tree; the medians and the ratio after / before are printed. Wall time moves with
the machine's other load; the children's CPU time (user + system) much less.

    .venv/bin/python scripts/bench_startup.py [--rounds 7] [--before /tmp/aelab-before] [--imports 5]

``--imports N`` adds what the imports cost in a fresh interpreter (N rounds, alternating): torch, what Lightning
imports, and aelab's run modules on top — the start-up a run cannot skip.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = Path(sys.executable).parent / "aelab-train"
TINY = [
    "data=sprites",
    "data.num_train=800",
    "data.num_test=200",
    "data.val_size=200",
    "data.batch_size=64",
    "data.eval_batch_size=200",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "model=mlp",
    "callbacks.progress_bar=null",
]
CASES = {
    "--help": ["--help"],
    "unknown key": ["model.bottlenek=8"],
    "bad value": ["model.optimizer.lr=-1"],
    "live run folder": [*TINY, "name=busy"],
    "completed run skipped": [*TINY, "name=done"],
}
# the process's imports, read back without changing what it imports: -X importtime lists every module it loads
HEAVY = ("torch", "lightning")


#: what a process pays to import: torch alone (the bare loop), torch with the compiler stack its optimizers load at
#: their first step (torch._dynamo: the bare loop pays it there), Lightning (torch, torchmetrics and what torchmetrics
#: imports), and aelab's entry point with the modules a default run imports — with ``import lightning.pytorch`` and as a
#: run loads Lightning (:func:`aelab.run.imports.import_lightning`: without ``scipy.signal``)
IMPORTS = {
    "torch": "import torch",
    "torch + torch._dynamo": "import torch, torch._dynamo",
    "torch + torchvision": "import torch, torchvision",
    "torchmetrics": "import torchmetrics",
    "lightning.pytorch": "import lightning.pytorch",
    "lightning.pytorch + aelab's run": "import lightning.pytorch, aelab.cli.train, aelab.run.parts, aelab.models, "
    "aelab.data, aelab.callbacks, aelab.tracking",
    "the same, as a run loads Lightning": "from aelab.run.imports import import_lightning; import_lightning(); "
    "import aelab.cli.train, aelab.run.parts, aelab.models, aelab.data, aelab.callbacks, aelab.tracking",
}


def import_times(rounds: int) -> None:
    """Each of :data:`IMPORTS` in a fresh interpreter, alternating, median of ``rounds``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    seen: dict[str, list[float]] = {k: [] for k in IMPORTS}
    for r in range(rounds):
        for name, code in list(IMPORTS.items()) if r % 2 == 0 else list(IMPORTS.items())[::-1]:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            seen[name].append(time.perf_counter() - started)
    base = statistics.median(seen["torch"])
    print(f"\nimports in a fresh interpreter, median of {rounds} (seconds, wall; and less torch's own):")
    print("| import | seconds | beyond torch |\n|---|---|---|")
    for name, times in seen.items():
        print(f"| {name} | {statistics.median(times):.2f} | {statistics.median(times) - base:+.2f} |")


def run(tree: Path, args: list[str], cwd: Path, importtime: bool = False) -> tuple[float, float, int, str]:
    """(wall s, CPU s of the process, exit code, stderr) of ``aelab-train args`` with ``tree``'s aelab."""
    env = dict(os.environ, PYTHONPATH=str(tree), WANDB_MODE="offline", COLUMNS="120")
    cmd = [sys.executable, "-X", "importtime", str(TRAIN), *args] if importtime else [str(TRAIN), *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode, done.stderr


def imported(tree: Path, args: list[str], cwd: Path) -> str:
    """Which of torch and Lightning the case imports (from ``python -X importtime``)."""
    stderr = run(tree, args, cwd, importtime=True)[3]
    names = {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    return ", ".join(m for m in HEAVY if m in names) or "neither"


def prepare(tree: Path, work: Path) -> Path:
    """A scratch folder for ``tree``: a completed run ``done`` and a folder ``busy`` to hold."""
    folder = work / tree.name
    folder.mkdir()
    wall, _, code, stderr = run(tree, [*TINY, "name=done"], folder)
    if code != 0:
        raise SystemExit(f"the tiny run for the skip case failed with {tree}:\n{stderr[-2000:]}")
    (folder / "outputs" / "runs" / "busy").mkdir()
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--before", type=Path, help="another aelab source tree to alternate with")
    parser.add_argument("--imports", type=int, default=0, metavar="ROUNDS", help="also time the imports (a table)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from aelab.store.locks import lock_folder

    trees = {"after": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    work = Path(tempfile.mkdtemp(prefix="aelab-bench-startup-"))
    try:
        folders = {side: prepare(tree, work) for side, tree in trees.items()}
        for folder in folders.values():
            lock_folder(folder / "outputs" / "runs" / "busy")  # held until this script exits: a live run's folder
        seen = {(case, side): [] for case in CASES for side in trees}
        for r in range(args.rounds):
            order = [(c, s) for c in CASES for s in trees]
            for case, side in order if r % 2 == 0 else order[::-1]:
                wall, cpu, code, stderr = run(trees[side], CASES[case], folders[side])
                expected = 0 if case in ("--help", "completed run skipped") else 1
                if code != expected:
                    raise SystemExit(f"{case} ({side}) exited with {code}:\n{stderr[-2000:]}")
                seen[case, side].append((wall, cpu))
        print(
            f"aelab-train as a whole process, median of {args.rounds} rounds ({os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f} at the end); seconds, wall (CPU of the process):"
        )
        sides = list(trees)
        head = " | ".join(f"{s} wall (CPU) | {s} imports" for s in sides)
        print(f"| case | {head} |" + (" after / before, wall (CPU) |" if len(sides) == 2 else ""))
        print("|---|" + "---|---|" * len(sides) + ("---|" if len(sides) == 2 else ""))
        for case in CASES:
            cells, med = [], {}
            for side in sides:
                med[side] = tuple(statistics.median(x[i] for x in seen[case, side]) for i in (0, 1))
                cells += [f"{med[side][0]:.2f} ({med[side][1]:.2f})", imported(trees[side], CASES[case], folders[side])]
            ratio = (
                f" {med['after'][0] / med['before'][0]:.2f} ({med['after'][1] / med['before'][1]:.2f}) |"
                if len(sides) == 2
                else ""
            )
            print(f"| {case} | " + " | ".join(cells) + " |" + ratio)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.imports:
        import_times(args.imports)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""What aelab adds to a training phase, in seconds: the training phase split into the compute it shares with a bare loop
and the rest, both sides in one process.

``scripts/bench_e2e.py`` races whole processes, and on a shared machine the same process's speed moves by 10–15 %
from one run to the next: more than the few per cent the framework costs. This script measures that cost where the
noise cannot hide it. The training phase (first training batch → end of fit, as ``metrics.json`` → ``timing``
counts it: every epoch with its validation, the overfitting gap and checkpoints) of

* **aelab** — the ``Job`` that ``aelab-train model=<net> data=fashion_mnist test=false`` runs (every default callback
  and the CSV logger; the child process runs on a pseudo-terminal, so the progress bar draws as in a terminal), and
* **bare** — ``scripts/bare_train.py``'s loop (the same work: the same nets, batches, optimizer, and after every epoch
  the same validation and gap forward passes and a checkpoint)

is split into **compute** — the model's objective (forward and loss), backward, the optimizer step, and the
evaluations' forward passes with their per-image values (aelab: ``per_sample_metrics``, for validation, the gap's
pass and the reconstruction grid's 16 images; bare: the same values) — and **the rest**: data, the loop, metrics,
logging, callbacks, checkpoints. The compute is the same work on both sides, so its time differs only by the
machine's noise; the rest is where a framework costs. **aelab's cost** is aelab's rest minus bare's, per epoch, and
as a share of bare's phase; **compute-matched ratio** is ``(bare phase + aelab's cost) / bare phase`` — the
training-phase ratio with the noise of the compute taken out.

What the split cannot see: work aelab does *inside* the compute that bare does not (the VAE's objective also forms
the ELBO and KL for logging). ``objective A/B`` measures that: aelab's objective, backward and optimizer step against
bare's on one fixed batch, in 60 pairs of blocks of 5 steps, alternating (the medians per step, and the median of the
pairs' ratios): a difference there is aelab's too.

CPU time of one torch thread (``time.process_time``); after one uncounted warm-up epoch of each, aelab and bare
alternate, ``--rounds`` times each (reversed in odd rounds); medians shown, and each round's split.

    .venv/bin/python scripts/bench_overhead.py [--nets conv,mlp,vae] [--rounds 3] [--epochs 2] [--separate]

``--separate`` runs each side's phase in a fresh process of its own instead (alternating, no warm-up, no objective
A/B): the same split, for what separate processes add — one process cannot see a cost that both sides pay in it
(docs/speed.md: Lightning's NVML check).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
clock = time.process_time


class Spans:
    """Accumulates CPU time by name (``with spans("objective"): ...``); counts only while ``on``."""

    def __init__(self):
        self.seconds: Counter = Counter()
        self.on = False

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = clock()
        try:
            yield
        finally:
            if self.on:
                self.seconds[name] += clock() - start

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            with self(name):
                return fn(*args, **kwargs)

        return timed


def default_job(net: str, epochs: int, work: str):
    """The ``Job`` of ``aelab-train model=<net> data=fashion_mnist test=false`` (the VAE on fixed binarization, as
    ``bare_train.py`` trains it), assembled in this process."""
    from bench_steps import built_job

    overrides = ["data=fashion_mnist", "test=false", f"model={net}", f"trainer.max_epochs={epochs}"]
    return built_job(overrides + (["data.binarize=fixed"] if net == "vae" else []), work, f"o{time.monotonic_ns()}")


def aelab_phase(net: str, epochs: int, work: str) -> dict:
    """aelab's training phase of ``epochs`` epochs: its CPU time and the compute within it."""
    import lightning as L

    job = default_job(net, epochs, work)
    model, spans = job.model, Spans()
    for name, attr in (
        ("objective", "objective"),
        ("backward", "_backward"),
        ("step", "_optimizer_step"),
        ("evaluation", "per_sample_metrics"),
    ):
        setattr(model, attr, spans.wrap(name, getattr(model, attr)))  # an instance attribute: every caller's path

    class Phase(L.Callback):
        def on_chunk_batch_start(self, *args):  # the first training batch: the phase starts (sanity check before)
            if not spans.on:
                spans.on, self.start = True, clock()

        def on_fit_end(self, *args):
            self.end = clock()

    phase = Phase()
    job.trainer.callbacks.insert(0, phase)
    job.trainer.fit(model, datamodule=job.datamodule)
    assert model._direct, "the step took Lightning's hook dispatch: the default job should not"  # noqa: SLF001
    return {"phase": phase.end - phase.start, **spans.seconds}


def bare_phase(net: str, epochs: int, work: str) -> dict:
    """``scripts/bare_train.py``'s training phase of ``epochs`` epochs: its CPU time and the compute within it."""
    import bare_train

    spans = Spans()
    spans.on = True  # the bare loop enters its spans inside the phase only
    _, _, _, cpu = bare_train.train(net, epochs, 256, Path(work) / "bare", span=spans)
    return {"phase": cpu, **spans.seconds}


def objective_ab(net: str, work: str) -> dict:
    """Per step (ms): aelab's objective + backward + optimizer step against bare's, on one fixed batch."""
    import bare_train
    import torch

    model = default_job(net, 1, work).model
    model.logging_step = False  # as on the steps nothing is written or shown (7 of 8 at the default cadence)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 28, 28, generator=g)
    if net == "vae":
        x = (x < 0.3).float()

    def aelab_step():
        loss, _ = model.objective(x, model.noise(x))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def bare_step():
        loss = bare_train.loss_of(net, model.encoder, model.decoder, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    got: dict[str, list[float]] = {"aelab": [], "bare": []}
    sides = (("aelab", aelab_step), ("bare", bare_step))
    for r in range(AB_BLOCKS):
        for name, step in sides if r % 2 == 0 else sides[::-1]:
            start = clock()
            for _ in range(AB_STEPS):
                step()
            got[name].append((clock() - start) / AB_STEPS * 1000)
    ratios = [a / b for a, b in zip(got["aelab"], got["bare"])]
    return {**{k: statistics.median(v) for k, v in got.items()}, "ratio": statistics.median(ratios)}


AB_BLOCKS, AB_STEPS = 60, 5  # objective A/B: blocks of steps per side, alternating


COMPUTE = ("objective", "backward", "step", "evaluation")


SIDES = {"aelab": aelab_phase, "bare": bare_phase}


def child(net: str, work: str, rounds: int, epochs: int) -> dict:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(SCRIPTS))
    runs: dict[str, list[dict]] = {"aelab": [], "bare": []}
    sides = tuple(SIDES.items())
    for _, fn in sides:  # warm-up, not counted: the process's first run of each pays its one-time costs
        fn(net, 1, work)
    for r in range(rounds):
        for name, fn in sides if r % 2 == 0 else sides[::-1]:
            runs[name].append(fn(net, epochs, work))
    return {"runs": runs, "ab": objective_ab(net, work)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", default="conv,mlp,vae")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--separate",
        action="store_true",
        help="each side's phase in a fresh process of its own (no warm-up, no objective A/B): what separate "
        "processes add, split the same way",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--side", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        net, work = args.child
        print("RESULT", json.dumps(child(net, work, args.rounds, args.epochs)))
        return
    if args.side:
        import torch

        torch.set_num_threads(1)
        side, net, work = args.side
        print("RESULT", json.dumps(SIDES[side](net, args.epochs, work)))
        return
    from bench_steps import child_result

    work = tempfile.mkdtemp(prefix="aelab-bench-overhead-")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        print(
            f"training phase, CPU time of one thread (Fashion-MNIST, {args.epochs} epochs, batch 256, CPU, "
            f"{os.cpu_count()} cores; medians of {args.rounds} rounds, aelab and bare alternating "
            f"{'each in a fresh process' if args.separate else 'in one process'}), seconds per epoch:"
        )
        print(
            "| net | phase aelab / bare | compute aelab / bare | rest aelab / bare | aelab's cost | "
            "compute-matched ratio | phase ratio (noise included) | objective A/B, ms a step aelab / bare |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for net in args.nets.split(","):
            if args.separate:
                got = {"runs": {"aelab": [], "bare": []}, "ab": None}
                for r in range(args.rounds):
                    for side in ("aelab", "bare") if r % 2 == 0 else ("bare", "aelab"):
                        side_args = [__file__, "--side", side, net, work, "--epochs", str(args.epochs)]
                        got["runs"][side].append(child_result(side_args, env=env, terminal=True))
            else:
                got = child_result(
                    [__file__, "--child", net, work, "--rounds", str(args.rounds), "--epochs", str(args.epochs)],
                    env=env,
                    terminal=True,
                )
            per_epoch = {
                side: [{k: v / args.epochs for k, v in run.items()} for run in got["runs"][side]]
                for side in ("aelab", "bare")
            }
            m = {}
            for side, runs in per_epoch.items():
                phase = [run["phase"] for run in runs]
                compute = [sum(run.get(k, 0.0) for k in COMPUTE) for run in runs]
                rest = [p - c for p, c in zip(phase, compute)]
                m[side] = {
                    "phase": statistics.median(phase),
                    "compute": statistics.median(compute),
                    "rest": statistics.median(rest),
                }
            cost = m["aelab"]["rest"] - m["bare"]["rest"]
            ab = got["ab"]
            ab_text = f"{ab['aelab']:.2f} / {ab['bare']:.2f}; paired {ab['ratio']:.3f}" if ab else "—"
            print(
                f"| {net} | {m['aelab']['phase']:.3f} / {m['bare']['phase']:.3f} | "
                f"{m['aelab']['compute']:.3f} / {m['bare']['compute']:.3f} | "
                f"{m['aelab']['rest']:.3f} / {m['bare']['rest']:.3f} | "
                f"{cost:+.3f} s ({100 * cost / m['bare']['phase']:+.1f} %) | "
                f"**{(m['bare']['phase'] + cost) / m['bare']['phase']:.3f}** | "
                f"{m['aelab']['phase'] / m['bare']['phase']:.3f} | {ab_text} |",
                flush=True,
            )
            for side in ("aelab", "bare"):
                parts = {k: round(statistics.median([r.get(k, 0.0) for r in per_epoch[side]]), 3) for k in COMPUTE}
                rounds = ", ".join(
                    f"{r['phase']:.3f} = {sum(r.get(k, 0.0) for k in COMPUTE):.3f} + "
                    f"{r['phase'] - sum(r.get(k, 0.0) for k in COMPUTE):.3f}"
                    for r in per_epoch[side]
                )
                print(f"    {net} {side}: compute by part (medians) {parts}; rounds, phase = compute + rest: {rounds}")
            if args.separate:
                pairs = [a["phase"] / b["phase"] for a, b in zip(got["runs"]["aelab"], got["runs"]["bare"])]
                print(
                    f"    {net}: each round's phase ratio {', '.join(f'{q:.3f}' for q in pairs)}; median "
                    f"{statistics.median(pairs):.3f}"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

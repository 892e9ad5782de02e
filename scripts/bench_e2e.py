#!/usr/bin/env python
"""End-to-end speed: the whole ``aelab-train`` process against a bare PyTorch script doing the same work.

What the user waits for: each side is a fresh process started from here on a pseudo-terminal (so
the progress bar draws as it does in a terminal), timed from launch to exit.

* **aelab**: ``aelab-train`` with its defaults — the default callbacks (checkpoints best + last, the
  overfitting gap, reconstruction grids, step seeding, metric history, learning-rate monitor, the
  Rich progress bar) and the CSV logger — on Fashion-MNIST, ``test=false``;
* **bare**: ``scripts/bare_train.py`` — the same net from ``aelab.nets``, the same split, batch 256,
  Adam 1e-3, and every epoch the forward passes of aelab's evaluation (validation with the values
  aelab computes, the overfitting gap's training-side pass) and a checkpoint: the same work;
* **bare, no gap**: the same script with ``--no-gap`` — validation of its objective only, no
  training-side pass: the work of a default aelab run minus those features' forward passes, so
  aelab's ratio to it counts the features' compute as aelab's cost.

Jobs: the conv AE (2 epochs), the MLP AE 784-512-256-32 (3 epochs), the VAE 784-200-200-50
(5 epochs, fixed binarization). aelab runs twice a round: with the default ``steps_per_call``
(``conf/config.yaml``: that many optimizer steps per Lightning call) and with ``steps_per_call=1``
(Lightning calls the step every batch). Runs alternate aelab / aelab N=1 / bare / bare no gap
(reversed in odd rounds); the median of ``--rounds`` is shown. aelab's time is split with the
timestamps its run record keeps (``metrics.json`` → ``timing``): **start-up** (launch → first
training batch; the import of torch and Lightning measured in the same run, and aelab's own share),
**training** (first batch → end of fit: every epoch with its validation, the overfitting gap and
checkpoints) against the bare script's same span, and the **end** (end of fit → exit). Peak RSS of
each process (``wait4``).

Then **feature costs**: the MLP job with each default feature switched off (and SSIM at every
validation, off by default, switched on), training phase against the default; and each default callback's share of
the fit of each job, timed inside its hooks by Lightning's ``SimpleProfiler`` (precise where the off-switch runs are
within this machine's noise). Then **sweeps**: a Hydra multirun of 8 MLP jobs (2 epochs, 10,000 training images)
with the basic launcher (one process) and with joblib (2 workers), against 8 bare runs back to back; the per-job
overhead is (Σ over worker processes of the span from its first job's first batch to its last job's end − the jobs'
training spans) / 8.

    .venv/bin/python scripts/bench_e2e.py [--rounds 3] [--jobs conv,mlp,vae] [--no-sweeps] [--one-thread]

``--one-thread`` runs every process with one torch thread and adds the training phase's CPU-time
ratio (aelab's ``metrics.json`` → ``timing.training_cpu_s``, the bare script's own count): on a
machine shared with other work, wall time swings with their load, CPU time of one thread much less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_steps import launch

BIN = Path(sys.executable).parent
SCRIPTS = Path(__file__).resolve().parent
JOBS = {
    "conv": (["model=conv"], 2),
    "mlp": (["model=mlp"], 3),
    "vae": (["model=vae", "data.binarize=fixed"], 5),
}
COMMON = ["data=fashion_mnist", "test=false", "trainer.accelerator=cpu"]


def aelab_run(
    job: str, out: Path, env: dict, name: str, extra: tuple[str, ...] = (), timeout: float | None = None
) -> dict:
    overrides, epochs = JOBS[job]
    cmd = [
        str(BIN / "aelab-train"),
        *COMMON,
        *overrides,
        f"trainer.max_epochs={epochs}",
        f"paths.output_dir={out}",
        f"name={name}",
        *extra,
    ]
    started, ended, rss, _ = launch(cmd, out, env, timeout)
    t = json.loads((out / "runs" / name / "metrics.json").read_text())["timing"]
    return {
        "wall": ended - started,
        "startup": t["first_batch_at"] - started,
        "imports": t["imports_s"],
        "training": t["fit_end_at"] - t["first_batch_at"],
        "training_cpu": t["training_cpu_s"],
        "end": ended - t["fit_end_at"],
        "rss": rss,
        "threads": t.get("threads"),
    }


def bare_run(job: str, out: Path, env: dict, gap: bool = True) -> dict:
    epochs = JOBS[job][1]
    cmd = [
        sys.executable,
        str(SCRIPTS / "bare_train.py"),
        "--net",
        job,
        "--epochs",
        str(epochs),
        "--out",
        str(out / "bare"),
        *(() if gap else ("--no-gap",)),
    ]
    started, ended, rss, output = launch(cmd, out, env)
    line = next(s for s in output.splitlines() if s.startswith("TIMES"))
    first, fit_end, _, cpu = (float(v) for v in line.split()[1:5])
    return {
        "wall": ended - started,
        "startup": first - started,
        "training": fit_end - first,
        "training_cpu": cpu,
        "end": ended - fit_end,
        "rss": rss,
    }


def default_steps_per_call() -> int:
    from bench_steps import default_steps_per_call as default

    return default()


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def paired(a: list[dict], b: list[dict], key: str) -> str:
    """The per-round ratios a/b of ``key`` (each round's runs back to back) and their median: a machine whose speed
    drifts between rounds moves a round's two runs together."""
    ratios = [x[key] / y[key] for x, y in zip(a, b)]
    return f"**{statistics.median(ratios):.3f}** ({', '.join(f'{r:.3f}' for r in ratios)})"


def sweeps(work: Path, env: dict) -> None:
    data = ["data.limit_train=10000", "trainer.max_epochs=2", "model=mlp"]
    results = {}
    for launcher in ("basic", "joblib"):
        extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
        cmd = [
            str(BIN / "aelab-train"),
            "-m",
            *COMMON,
            *data,
            *extra,
            "model.bottleneck=2,4,8,16,24,32,48,64",
            f"paths.output_dir={work / launcher}",
            f"sweep.name={launcher}",
        ]
        started, ended, rss, _ = launch(cmd, work, env)
        records = [json.loads(p.read_text()) for p in (work / launcher / "sweeps" / launcher).glob("*/metrics.json")]
        assert len(records) == 8 and all(r["status"] == "completed" for r in records), "a sweep job did not complete"
        training = sum(r["timing"]["training_s"] for r in records)
        workers: dict[int, list[dict]] = {}  # the jobs of one process (a joblib worker runs several)
        for r in records:
            workers.setdefault(r["timing"]["pid"], []).append(r)
        # each process, from its first job's first batch to its last job's record: all but that first start-up
        spans = sum(
            max(r["finished_at_unix"] for r in rs) - min(r["timing"]["first_batch_at"] for r in rs)
            for rs in workers.values()
        )
        results[launcher] = (ended - started, (spans - training) / 8, len(workers))
    bare_total = 0.0
    for i in range(8):
        (work / f"bare{i}").mkdir()
        cmd = [
            sys.executable,
            str(SCRIPTS / "bare_train.py"),
            "--net",
            "mlp",
            "--epochs",
            "2",
            "--out",
            str(work / f"bare{i}"),
        ]
        started, ended, _, _ = launch(cmd, work, env)
        bare_total += ended - started
    print(
        "\nsweeps: 8 MLP jobs, 2 epochs on 10,000 images each (bare: the full 55,000-image split, 8 separate processes)"
    )
    for launcher, (wall, overhead, processes) in results.items():
        print(
            f"  {launcher:7s} launcher: {wall:6.1f} s for the sweep in {processes} process(es), "
            f"per-job overhead after each process's first start-up {overhead:.2f} s (target < 1 s)"
        )
    print(f"  8 bare runs back to back: {bare_total:.1f} s")


FEATURES = {
    "overfitting gap": ("callbacks.overfitting_gap=null",),
    "reconstruction grids": ("callbacks.reconstruction_grid=null",),
    "progress bar": ("callbacks.progress_bar=null",),
    "checkpoints (best + last)": ("callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null"),
}


def feature_costs(work: Path, env: dict, rounds: int) -> None:
    """What each default feature costs in the MLP job's training phase: default against the feature switched off,
    and SSIM at every validation (off by default) switched on."""
    variants = {
        "default": (),
        **{f"without {k}": v for k, v in FEATURES.items()},
        "with SSIM at validation": ("model.val_ssim=true",),
    }
    got: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        for name, extra in list(variants.items()) if r % 2 == 0 else list(variants.items())[::-1]:
            out = work / f"feat{r}_{len(got[name])}_{abs(hash(name)) % 10000}"
            out.mkdir()
            got[name].append(aelab_run("mlp", out, env, "f", extra)["training"])
    base = statistics.median(got["default"])
    print(f"\nfeature costs, MLP job (3 epochs), training phase, median of {rounds}:")
    print("| run | training phase (s) | against the default |")
    print("|---|---|---|")
    for name, values in got.items():
        m = statistics.median(values)
        print(f"| {name} | {m:.2f} | {100 * (m - base) / base:+.1f} % |")


def profile_child(job: str, work: str) -> None:
    """In this process: the job as ``aelab-train`` builds it, fitted under Lightning's ``SimpleProfiler``; prints the
    seconds inside each callback's hooks (all hooks of one class summed) and the fit's wall time as JSON."""
    from bench_steps import built_job

    overrides, epochs = JOBS[job]
    run = built_job([*COMMON, *overrides, f"trainer.max_epochs={epochs}", "+trainer.profiler=simple"], work, "profiled")
    started = time.perf_counter()
    run.trainer.fit(run.model, datamodule=run.datamodule)
    fit = time.perf_counter() - started
    spent: dict[str, float] = {}
    for action, durations in run.trainer.profiler.recorded_durations.items():
        if action.startswith("[Callback]"):
            name = action[len("[Callback]") :].split(".")[0].split("{")[0]
            spent[name] = spent.get(name, 0.0) + sum(durations)
    print("RESULT", json.dumps({"fit": fit, "callbacks": spent}))


def callback_shares(work: Path, env: dict, jobs: list[str]) -> None:
    """Each default callback's share of the fit (time inside its hooks, from Lightning's SimpleProfiler), per job."""
    from bench_steps import child_result

    print("\ntime inside each callback's hooks, share of the fit (Lightning's SimpleProfiler, one run each):")
    print("| callback | " + " | ".join(jobs) + " |")
    print("|---|" + "---|" * len(jobs))
    results = {}
    for job in jobs:
        out = work / f"profile_{job}"
        out.mkdir()
        results[job] = child_result([__file__, "--profile-child", job, str(out)], env)
    names = sorted(
        {n for r in results.values() for n in r["callbacks"]},
        key=lambda n: -max(r["callbacks"].get(n, 0) / r["fit"] for r in results.values()),
    )
    for name in names:
        cells = [
            f"{100 * r['callbacks'].get(name, 0.0) / r['fit']:.2f} % ({r['callbacks'].get(name, 0.0):.2f} s)"
            for r in results.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| (fit, wall) | " + " | ".join(f"{r['fit']:.1f} s" for r in results.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", default="conv,mlp,vae")
    parser.add_argument("--no-sweeps", action="store_true")
    parser.add_argument("--no-features", action="store_true")
    parser.add_argument(
        "--one-thread",
        action="store_true",
        help="every process with one torch thread; adds the training phase's CPU-time ratio (robust to other load)",
    )
    parser.add_argument("--profile-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile_child:
        profile_child(*args.profile_child)
        return
    env = dict(
        os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1", COLUMNS="120", TERM=os.environ.get("TERM", "xterm")
    )
    if args.one_thread:
        env["OMP_NUM_THREADS"] = "1"  # the bare script's torch threads; aelab-train gets threads=1
        COMMON.append("threads=1")
    env.pop("WANDB_SERVICE", None)
    work = Path(tempfile.mkdtemp(prefix="aelab-bench-e2e-"))
    rows = []
    try:
        default = default_steps_per_call()
        for job in [j for j in args.jobs.split(",") if j]:  # --jobs "": sweeps and features only
            a, one, b, nogap = [], [], [], []
            for r in range(args.rounds):
                out = work / f"{job}{r}"
                out.mkdir()
                runs = [
                    lambda: a.append(aelab_run(job, out, env, f"{job}{r}")),  # noqa: B023 — called below, in this iteration
                    lambda: one.append(aelab_run(job, out, env, f"{job}{r}n1", ("steps_per_call=1",))),  # noqa: B023
                    lambda: b.append(bare_run(job, out, env)),  # noqa: B023 — called below, in this iteration
                    lambda: nogap.append(bare_run(job, out, env, gap=False)),  # noqa: B023
                ]
                for step in runs if r % 2 == 0 else runs[::-1]:
                    step()
            rows.append((job, a, one, b, nogap))
            print(
                f"{job}: aelab {[round(x['wall'], 1) for x in a]} s, aelab N=1 {[round(x['wall'], 1) for x in one]} s, "
                f"bare {[round(x['wall'], 1) for x in b]} s, bare no gap {[round(x['wall'], 1) for x in nogap]} s",
                flush=True,
            )
        if rows:
            print(
                f"\nwhole process, median of {args.rounds} (CPU, {os.cpu_count()} cores, load average "
                f"{os.getloadavg()[0]:.1f} at the end; seconds); aelab with steps_per_call={default} (the default) "
                "and =1:"
            )
            print(
                "| job | aelab-train | bare | ratio | aelab start-up (torch+Lightning import / aelab's own) "
                f"| bare start-up | training aelab N={default} / bare = ratio | training aelab N=1 / bare = ratio "
                f"| training aelab N={default} / bare no gap = ratio | end aelab / bare | peak RSS aelab / bare |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            cpu_rows = []
            for job, a, one, b, nogap in rows:
                cpu_rows.append(
                    f"| {job} | {med(a, 'training_cpu'):.1f} / {med(b, 'training_cpu'):.1f} "
                    f"= {med(a, 'training_cpu') / med(b, 'training_cpu'):.3f} "
                    f"| {med(one, 'training_cpu'):.1f} / {med(b, 'training_cpu'):.1f} "
                    f"= {med(one, 'training_cpu') / med(b, 'training_cpu'):.3f} "
                    f"| {med(a, 'training_cpu'):.1f} / {med(nogap, 'training_cpu'):.1f} "
                    f"= {med(a, 'training_cpu') / med(nogap, 'training_cpu'):.3f} |"
                )
                epochs = JOBS[job][1]
                own = med(a, "startup") - med(a, "imports")
                print(
                    f"| {job} ({epochs} ep) | {med(a, 'wall'):.1f} | {med(b, 'wall'):.1f} "
                    f"| {med(a, 'wall') / med(b, 'wall'):.3f} "
                    f"| {med(a, 'startup'):.1f} ({med(a, 'imports'):.1f} / {own:.1f}) | {med(b, 'startup'):.1f} "
                    f"| {med(a, 'training'):.1f} / {med(b, 'training'):.1f} "
                    f"= {med(a, 'training') / med(b, 'training'):.3f} "
                    f"| {med(one, 'training'):.1f} / {med(b, 'training'):.1f} "
                    f"= {med(one, 'training') / med(b, 'training'):.3f} "
                    f"| {med(a, 'training'):.1f} / {med(nogap, 'training'):.1f} "
                    f"= {med(a, 'training') / med(nogap, 'training'):.3f} "
                    f"| {med(a, 'end'):.2f} / {med(b, 'end'):.2f} | {med(a, 'rss'):.0f} / {med(b, 'rss'):.0f} MB |"
                )
        if rows and args.one_thread:
            print(f"\ntraining phase, CPU time of the process (one thread), median of {args.rounds}; seconds:")
            print(
                f"| job | aelab N={default} / bare = ratio | aelab N=1 / bare = ratio "
                f"| aelab N={default} / bare no gap = ratio |"
            )
            print("|---|---|---|---|")
            print("\n".join(cpu_rows))
        if rows:
            print(
                f"\nthe ratio within each round, median of {args.rounds} (the rounds' ratios): the training phase, and "
                "the whole process (launch → exit)"
            )
            print(
                f"| job | time | aelab N={default} / bare | aelab N=1 / bare | aelab N={default} / bare no gap |\n"
                "|---|---|---|---|---|"
            )
            for job, a, one, b, nogap in rows:
                timings = [("training, wall", "training")]
                timings += [("training, CPU", "training_cpu")] if args.one_thread else []
                for label, key in [*timings, ("whole process, wall", "wall")]:
                    print(
                        f"| {job} | {label} | {paired(a, b, key)} | {paired(one, b, key)} | {paired(a, nogap, key)} |"
                    )
        if not args.no_features:
            feature_costs(work, env, args.rounds)
            callback_shares(work, env, list(JOBS))
        if not args.no_sweeps:
            sweeps(work, env)
        try:
            import torch

            if not torch.cuda.is_available():
                print(
                    "\nGPU rows skipped: no CUDA device on this machine "
                    "(scripts/bench_train.py has the GPU throughput rows)"
                )
        except ImportError:
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

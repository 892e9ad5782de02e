#!/usr/bin/env python
"""Where the training-phase overhead comes from: the time of one training step, four ways.

* **bare** — the loop of ``scripts/bare_train.py`` (same nets from ``aelab.nets``, batch 256, Adam);
* **plain Lightning** — a minimal ``LightningModule`` with the same nets and loss (automatic optimization),
  aelab's DataModule, no callbacks, no logger, no progress bar: what Lightning's loop costs per step;
* **aelab, 1 step a call** — ``aelab-train``'s model, DataModule, default callbacks and CSV logger
  (validation off, so only steps are timed) with ``steps_per_call=1``: Lightning calls the step every batch;
* **aelab** — the same with the default ``steps_per_call`` (``conf/config.yaml``): one Lightning call
  per chunk of that many batches.

Each is one epoch of Fashion-MNIST, timed at the start of every batch (inside a chunk too). The
step time is the median over windows of ``WINDOW`` consecutive batches of their mean: robust to this
machine's bursts of noise, and every window holds one call's fixed cost when chunks are that long
(a plain median of single intervals would miss it). The four run in one process per net,
alternating, round after round: in separate processes the same loop's compute (a conv step's forward
and backward) differed by up to 50 % from process to process, which swamped the overhead measured.

    .venv/bin/python scripts/bench_steps.py [--nets conv,mlp,vae] [--rounds 3] [--steps-per-call 1,2,4,8,16]

``--steps-per-call`` adds an aelab column per value (the measurement that chose the default).
``--cpu-time`` times the process's CPU time with one torch thread instead of wall time: on a
machine shared with other work, wall time swings with their load (a step's wall time doubled
from one round to the next on 2 shared cores), CPU time much less; it counts the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
WINDOW = 8  # batches per window of the step time (a multiple of the default steps_per_call's calls)
clock = time.perf_counter  # --cpu-time: time.process_time, one torch thread


def median_step_ms(times: list[float]) -> float:
    """The median over windows of ``WINDOW`` consecutive batches of their mean step time, in ms."""
    means = [(times[i + WINDOW] - times[i]) / WINDOW for i in range(0, len(times) - WINDOW, WINDOW)]
    return statistics.median(means) * 1000


def default_steps_per_call() -> int:
    """The ``steps_per_call`` of ``conf/config.yaml``."""
    from omegaconf import OmegaConf

    from aelab import config_dir

    return int(OmegaConf.load(Path(config_dir()) / "config.yaml").steps_per_call)


def launch(cmd: list[str], cwd: Path, env: dict, timeout: float | None = None) -> tuple[float, float, float, str]:
    """Run ``cmd`` on a pseudo-terminal; returns (launch time, exit time, peak RSS MB, output). Past ``timeout``
    seconds its process group is killed and :class:`TimeoutError` raised."""
    import pty  # noqa: F401 — Linux

    master, slave = os.openpty()
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    started = time.time()
    pid = os.fork()
    if pid == 0:  # the child: the pty is its terminal
        try:
            os.setsid()
            os.dup2(slave, 0), os.dup2(slave, 1), os.dup2(slave, 2)
            os.chdir(cwd)
            os.execve(cmd[0], cmd, env)
        finally:
            os._exit(127)  # never return into a copy of the benchmark
    os.close(slave)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, os.killpg, (pid, signal.SIGKILL)) if timeout else None
    if timer is not None:
        timer.start()
    try:
        _, status, usage = os.wait4(pid, 0)
    except BaseException:  # Ctrl-C: the child has its own session, so stop it too
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        raise
    ended = time.time()
    if timer is not None:
        timer.cancel()
    reader.join(timeout=5)
    os.close(master)
    output = b"".join(chunks).decode(errors="replace")
    if timeout and ended - started >= timeout and os.waitstatus_to_exitcode(status) == -signal.SIGKILL:
        raise TimeoutError(f"{' '.join(cmd)} did not end within {timeout:.0f} s")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{output[-3000:]}")
    return started, ended, usage.ru_maxrss / 1024, output


def child_result(args: list[str], env: dict | None = None, terminal: bool = False):
    """Run ``python <args>`` in a fresh process and return the JSON its last ``RESULT`` line carries; with
    ``terminal``, on a pseudo-terminal (the progress bar draws as in a terminal)."""
    if terminal:
        output = launch([sys.executable, *args], Path.cwd(), dict(os.environ) if env is None else env)[3]
    else:
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        output = done.stdout
    line = next((s for s in reversed(output.splitlines()) if "RESULT " in s), None)  # after a pty's escape codes
    if line is None:
        raise SystemExit(f"{' '.join(args)} printed no RESULT line:\n{output[-3000:]}")
    return json.loads(line.split("RESULT ", 1)[1])


def built_job(overrides: list[str], work: str, name: str):
    """In this process, the ``Job`` that ``aelab-train overrides`` would run, assembled (not yet fitted)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from aelab.run.compose import compose
    from aelab.run.folders import own
    from aelab.run.job import Job
    from aelab.run.precheck import prepare

    cfg = compose("config", [*overrides, f"paths.output_dir={work}", f"name={name}"], hydra=True)
    run_dir = Path(work) / "runs" / name
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    job = Job(cfg, prepare(cfg, run_dir, choose=lambda: own(run_dir)))
    job.assemble()
    return job


def child(mode: str, net: str, work: str, steps_per_call: int | None = None) -> float:
    import torch

    sys.path.insert(0, str(SCRIPTS))
    import bare_train as bare

    if mode == "bare":
        images = torch.from_numpy(bare.read_idx(bare.FMNIST / "train-images-idx3-ubyte.gz").copy())[:, None][:55000]
        if net == "vae":
            images = (torch.rand(images.shape) < images.float() / 255).to(torch.uint8) * 255
        enc, dec = bare.nets(net)
        opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
        perm, times = torch.randperm(len(images)), []
        for start in range(0, len(images), 256):
            times.append(clock())
            x = images[perm[start : start + 256]].float().div_(255)
            loss = bare.loss_of(net, enc, dec, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return median_step_ms(times)
    import lightning as L

    times: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *args):  # plain Lightning: one batch a call
            if mode == "plain":
                times.append(clock())

        def on_chunk_batch_start(self, *args):  # aelab's step: before every batch, inside a call too
            times.append(clock())

    if mode == "plain":
        from aelab.data import FashionMNIST

        class Plain(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.enc, self.dec = bare.nets(net)

            def training_step(self, batch, batch_idx):
                return bare.loss_of(net, self.enc, self.dec, batch["image"])

            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters(), lr=1e-3)

        trainer = L.Trainer(
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[Clock()],
            accelerator="cpu",
            limit_val_batches=0,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
        )
        binarize = "fixed" if net == "vae" else "none"
        trainer.fit(Plain(), datamodule=FashionMNIST(root="data", download=False, batch_size=256, binarize=binarize))
        return median_step_ms(times)
    overrides = [
        "data=fashion_mnist",
        "test=false",
        "trainer.max_epochs=1",
        f"model={net}",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        f"steps_per_call={steps_per_call}",
    ] + (["data.binarize=fixed"] if net == "vae" else [])
    job = built_job(overrides, work, f"steps-{time.monotonic_ns()}")  # a fresh run folder each time (no resume)
    job.trainer.callbacks.append(Clock())
    job.trainer.fit(job.model, datamodule=job.datamodule)
    return median_step_ms(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", default="conv,mlp,vae")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-call", default="", help="more aelab columns: these steps_per_call values")
    parser.add_argument("--cpu-time", action="store_true", help="CPU time of one thread, not wall time")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one net, every round and mode in this process
        global clock
        net, where, rounds, sizes = args.child
        if args.cpu_time:
            import torch

            torch.set_num_threads(1)
            clock = time.process_time
        modes = ["bare", "plain"] + [f"aelab:{n}" for n in sizes.split(",")]
        got: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(int(rounds)):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                kind, _, n = mode.partition(":")
                got[mode].append(child(kind, net, where, int(n) if n else None))
        print("RESULT", json.dumps(got))
        return
    default = default_steps_per_call()
    sizes = sorted({1, default, *(int(n) for n in args.steps_per_call.split(",") if n)})
    work = tempfile.mkdtemp(prefix="aelab-bench-steps-")
    try:
        print(
            f"training step, ms of {'CPU time, 1 thread' if args.cpu_time else 'wall time'} (batch 256, CPU, "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
            f"median over windows of {WINDOW} batches of one epoch, median of {args.rounds} rounds); "
            f"aelab N = steps_per_call (default {default}):"
        )
        cols = [f"aelab N={n}" for n in sizes]
        print(
            "| net | bare | plain Lightning | "
            + " | ".join(cols)
            + " | plain / bare | "
            + " | ".join(f"{c} / bare" for c in cols)
            + " |"
        )
        print("|---|---|---|" + "---|" * len(cols) + "---|" + "---|" * len(cols))
        for net in args.nets.split(","):
            child_args = [__file__, "--child", net, work, str(args.rounds), ",".join(map(str, sizes))]
            got = child_result(child_args + (["--cpu-time"] if args.cpu_time else []))
            m = {k: statistics.median(v) for k, v in got.items()}
            aelab = [m[f"aelab:{n}"] for n in sizes]
            print(
                f"| {net} | {m['bare']:.2f} | {m['plain']:.2f} | "
                + " | ".join(f"{a:.2f}" for a in aelab)
                + f" | {m['plain'] / m['bare']:.3f} | "
                + " | ".join(f"{a / m['bare']:.3f}" for a in aelab)
                + " |",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

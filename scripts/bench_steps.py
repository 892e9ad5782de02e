#!/usr/bin/env python
"""Where the training-phase overhead comes from: the median time of one training step, three ways.

* **bare** — the loop of ``scripts/bare_train.py`` (same nets from ``aelab.nets``, batch 256, Adam);
* **plain Lightning** — a minimal ``LightningModule`` with the same nets and loss, aelab's DataModule,
  no callbacks, no logger, no progress bar: what Lightning's training loop itself costs per step;
* **aelab** — ``aelab-train``'s model, DataModule, default callbacks and CSV logger (validation off,
  so only steps are timed).

Each is one epoch of Fashion-MNIST; the median of the step-to-step intervals is robust to this
machine's bursts of noise. The three run in one process per net, alternating, round after round:
in separate processes the same loop's compute (a conv step's forward and backward) differed by up
to 50 % from process to process, which swamped the overhead being measured.

    .venv/bin/python scripts/bench_steps.py [--nets conv,mlp,vae] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent


def median_step_ms(times: list[float]) -> float:
    return statistics.median(b - a for a, b in zip(times, times[1:])) * 1000


def child_result(args: list[str], env: dict | None = None):
    """Run ``python <args>`` in a fresh process and return the JSON its last ``RESULT`` line carries."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    line = next(s for s in reversed(done.stdout.splitlines()) if s.startswith("RESULT "))
    return json.loads(line.split(" ", 1)[1])


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


def child(mode: str, net: str, work: str) -> float:
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
            times.append(time.perf_counter())
            x = images[perm[start : start + 256]].float().div_(255)
            loss = bare.loss_of(net, enc, dec, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return median_step_ms(times)
    import lightning as L

    times: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *args):
            times.append(time.perf_counter())

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
    ] + (["data.binarize=fixed"] if net == "vae" else [])
    job = built_job(overrides, work, f"steps-{time.monotonic_ns()}")  # a fresh run folder each time (no resume)
    job.trainer.callbacks.append(Clock())
    job.trainer.fit(job.model, datamodule=job.datamodule)
    return median_step_ms(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", default="conv,mlp,vae")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one net, every round and mode in this process
        net, where, rounds = args.child
        got: dict[str, list[float]] = {"bare": [], "plain": [], "aelab": []}
        for r in range(int(rounds)):
            for mode in list(got) if r % 2 == 0 else list(got)[::-1]:
                got[mode].append(child(mode, net, where))
        print("RESULT", json.dumps(got))
        return
    work = tempfile.mkdtemp(prefix="aelab-bench-steps-")
    try:
        print(f"median training step, ms (batch 256, CPU, median over one epoch, median of {args.rounds} rounds):")
        print(
            "| net | bare | plain Lightning | aelab | Lightning's own / bare | aelab / plain Lightning | aelab / bare |"
        )
        print("|---|---|---|---|---|---|---|")
        for net in args.nets.split(","):
            got = child_result([__file__, "--child", net, work, str(args.rounds)])
            m = {k: statistics.median(v) for k, v in got.items()}
            print(
                f"| {net} | {m['bare']:.2f} | {m['plain']:.2f} | {m['aelab']:.2f} | {m['plain'] / m['bare']:.3f} "
                f"| {m['aelab'] / m['plain']:.3f} | {m['aelab'] / m['bare']:.3f} |",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

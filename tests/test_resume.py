"""Runs that survive a kill: SIGKILL and resume with the same command, SIGTERM, completed runs, broken checkpoints."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import BIN, TINY
from wandb_files import offline_runs

# A run whose numbers move every epoch: conv autoencoder with Gaussian corruption (random draws in training).
RESUMABLE = [
    *TINY,
    "model=conv",
    "noise=gaussian",
    "trainer.max_epochs=4",
    "trainer.deterministic=true",
    "logger=wandb",
]
KILL_AT_EPOCH_2 = [
    "+callbacks.fault._target_=aelab.callbacks.FaultInjection",
    "+callbacks.fault.at_epoch=2",
    "+callbacks.fault.signal=SIGKILL",
    "+callbacks.fault.marker_dir=${paths.run_dir}",
]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow  # 40 s; the SIGTERM mid-epoch test below covers exact resumption in the fast suite
def test_sigkill_then_same_command_resumes_to_identical_metrics(cli, tmp_path):
    runs = tmp_path / "outputs" / "runs"
    whole = cli(*RESUMABLE, "name=whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = cli(*RESUMABLE, "name=killed", *KILL_AT_EPOCH_2)
    assert killed.returncode == -signal.SIGKILL
    assert metrics(runs / "killed")["status"] == "running"  # what a dead machine leaves behind
    assert torch.load(runs / "killed" / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1

    resumed = cli(*RESUMABLE, "name=killed", *KILL_AT_EPOCH_2)  # the very same command
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = metrics(runs / "whole"), metrics(runs / "killed")
    assert b["status"] == "completed" and b["resumed_from"].endswith("last.ckpt")
    assert (a["epochs"], a["global_step"]) == (b["epochs"], b["global_step"])
    assert a["final"] == b["final"]  # bit-identical on CPU with deterministic=true
    assert a["best"] == b["best"] and a["best_epoch"] == b["best_epoch"]

    # the CSV log continues (epochs before the kill are kept) and W&B resumed the same run
    with open(runs / "killed" / "csv" / "metrics.csv") as fh:
        epochs = {line.split(",")[0] for line in list(fh)[1:]}
    assert {"0", "1", "2", "3"} <= epochs
    ids = {d.name.rsplit("-", 1)[-1] for d in offline_runs(runs / "killed")}
    assert len(offline_runs(runs / "killed")) == 2 and len(ids) == 1
    assert b["wandb"]["id"] in ids


def test_sigterm_mid_epoch_then_same_command_resumes_at_the_next_batch_to_identical_metrics(cli, tmp_path):
    """The SLURM preemption path: SIGTERM in the middle of an epoch, then the same command (CPU, deterministic)."""
    runs = tmp_path / "outputs" / "runs"
    base = [*RESUMABLE, "logger=csv", "model=mlp"]  # an MLP with Gaussian corruption: the same path, half the time
    whole = cli(*base, "name=whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    term = [
        "+callbacks.fault._target_=aelab.callbacks.FaultInjection",
        "+callbacks.fault.at_epoch=1",
        "+callbacks.fault.at_batch=5",
        "+callbacks.fault.signal=SIGTERM",
        "+callbacks.fault.marker_dir=${paths.run_dir}",
    ]
    stopped = cli(*base, "name=t", *term)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    record = metrics(runs / "t")
    assert record["status"] == "interrupted"
    steps_per_epoch = metrics(runs / "whole")["global_step"] // metrics(runs / "whole")["epochs"]
    assert (
        record["global_step"] == steps_per_epoch + 6
    )  # batch 5, during which the signal came, finished; then it stopped
    resumed = cli(*base, "name=t", *term)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stdout + resumed.stderr  # Lightning's warning about replaying the epoch
    a, b = metrics(runs / "whole"), metrics(runs / "t")
    assert (a["epochs"], a["global_step"]) == (b["epochs"], b["global_step"])
    assert a["final"] == b["final"] and a["best"] == b["best"]  # the interrupted epoch's mean included
    with open(runs / "t" / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    train_steps = [r["step"] for r in rows if r.get("train/recon_loss")]
    assert len(train_steps) == len(set(train_steps))  # no step logged twice


def test_completed_named_run_is_not_retrained_and_resume_never_protects_it(cli, tmp_path):
    first = cli(*TINY, "model=linear", "name=done", "data.limit_train=128", "test=false")
    assert first.returncode == 0, first.stderr[-2000:]
    before = (tmp_path / "outputs" / "runs" / "done" / "metrics.json").read_text()
    again = cli(*TINY, "model=linear", "name=done", "data.limit_train=128", "test=false")
    assert again.returncode == 0 and "completed earlier" in again.stdout + again.stderr
    assert (tmp_path / "outputs" / "runs" / "done" / "metrics.json").read_text() == before
    never = cli(*TINY, "model=linear", "name=done", "resume=never", "data.limit_train=128")
    assert never.returncode != 0 and "already holds checkpoints and resume=never" in never.stderr


def test_sigterm_saves_a_checkpoint_and_records_interrupted(tmp_path):
    env = dict(os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    args = [*TINY, "model=mlp", "trainer.max_epochs=500", "name=term"]
    proc = subprocess.Popen(
        [str(BIN / "aelab-train"), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run_dir = tmp_path / "outputs" / "runs" / "term"
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert last.exists(), "no epoch finished in time"
    first_save = last.stat().st_mtime_ns
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "interrupted" in out and "run the same command again to continue" in out
    data = metrics(run_dir)
    assert data["status"] == "interrupted"
    assert last.stat().st_mtime_ns > first_save  # saved at the signal, not only at the last epoch end
    ckpt = torch.load(last, weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_truncated_checkpoint_is_named_not_a_traceback(cli, tmp_path):
    first = cli(
        *TINY,
        "model=linear",
        "name=trunc",
        "trainer.max_epochs=1",
        "data.limit_train=128",
        "+callbacks.fault._target_=aelab.callbacks.FaultInjection",
        "+callbacks.fault.at_epoch=1",
        "trainer.max_epochs=2",
        "+callbacks.fault.marker_dir=${paths.run_dir}",
    )
    assert first.returncode == -signal.SIGKILL
    last = tmp_path / "outputs" / "runs" / "trunc" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # a half-copied file
    again = cli(*TINY, "model=linear", "name=trunc", "trainer.max_epochs=2", "data.limit_train=128")
    assert again.returncode != 0
    assert f"checkpoint {last} is truncated or corrupt" in again.stderr
    assert "Traceback" not in again.stderr

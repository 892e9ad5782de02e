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


# An MLP with Gaussian corruption (random draws every step): the same path as RESUMABLE, half the time. 10 batches an
# epoch, trained in calls of 8 + 2 (steps_per_call=8, the default).
MID_EPOCH = [*RESUMABLE, "logger=csv", "model=mlp"]


def fault(signal_name: str, at_batch: int = 5, times: int = 1) -> list[str]:
    """A signal before training batch ``at_batch`` of epoch 1 (inside the epoch's first call of 8 batches)."""
    return [
        "+callbacks.fault._target_=aelab.callbacks.FaultInjection",
        "+callbacks.fault.at_epoch=1",
        f"+callbacks.fault.at_batch={at_batch}",
        f"+callbacks.fault.signal={signal_name}",
        f"+callbacks.fault.times={times}",
        "+callbacks.fault.marker_dir=${paths.run_dir}",
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run every interrupted one must end identical to."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("whole")
    whole = run_cli([*MID_EPOCH, "name=whole"], root)
    assert whole.returncode == 0, whole.stderr[-3000:]
    return metrics(root / "outputs" / "runs" / "whole")


def stop_then_resume(cli, tmp_path, signal_name: str, expected_code: int, times: int = 1) -> tuple[dict, dict, str]:
    """Stop a run with a signal inside a call of 8 batches, then run the very same command; returns the record
    after the stop, after the resume, and the first run's output."""
    runs = tmp_path / "outputs" / "runs"
    stopped = cli(*MID_EPOCH, "name=t", *fault(signal_name, times=times))
    assert stopped.returncode == expected_code, stopped.stderr[-3000:]
    record = metrics(runs / "t")
    resumed = cli(*MID_EPOCH, "name=t", *fault(signal_name, times=times))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stdout + resumed.stderr  # Lightning's warning about replaying the epoch
    with open(runs / "t" / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    train_steps = [r["step"] for r in rows if r.get("train/recon_loss")]
    assert len(train_steps) == len(set(train_steps))  # no step logged twice
    return record, metrics(runs / "t"), stopped.stdout + stopped.stderr


def assert_identical(a: dict, b: dict) -> None:
    assert (a["epochs"], a["global_step"]) == (b["epochs"], b["global_step"]) == (4, 40)
    assert a["final"] == b["final"] and a["best"] == b["best"]  # the interrupted epoch's mean included


@pytest.mark.slow  # ~30 s with its setup: CI runs it with the slow checks; the Ctrl-C resume test stays quick
def test_sigterm_mid_epoch_then_same_command_resumes_at_the_next_batch_to_identical_metrics(
    cli, tmp_path, uninterrupted
):
    """The SLURM preemption path: SIGTERM in the middle of an epoch, then the same command (CPU, deterministic)."""
    record, resumed, _ = stop_then_resume(cli, tmp_path, "SIGTERM", 128 + signal.SIGTERM)
    assert record["status"] == "interrupted"
    assert record["global_step"] == 10 + 8  # the call during which the signal came (batches 0-7) finished; then stop
    assert_identical(uninterrupted, resumed)


@pytest.mark.slow  # 16-31 s: runs with the slow checks (make test stays < 5 min)
def test_ctrl_c_inside_a_call_stops_at_its_end_and_the_same_command_ends_identical(cli, tmp_path, uninterrupted):
    """The issue's Ctrl-C: it used to raise mid-step, exit 1 with "SystemExit: 1", save a mid-step checkpoint,
    and the continued run ended one step short (2999 of 3000)."""
    record, resumed, output = stop_then_resume(cli, tmp_path, "SIGINT", 128 + signal.SIGINT)
    assert "Ctrl-C: stopping after this step" in output and "SystemExit" not in output
    assert record["status"] == "interrupted" and record["error"] == "KeyboardInterrupt: stopped by Ctrl-C"
    assert record["global_step"] == 10 + 8
    assert_identical(uninterrupted, resumed)


@pytest.mark.slow  # 2 more runs; the first Ctrl-C's path is in the fast suite
def test_a_second_ctrl_c_stops_at_once_and_the_same_command_still_ends_identical(cli, tmp_path, uninterrupted):
    record, resumed, output = stop_then_resume(cli, tmp_path, "SIGINT", 128 + signal.SIGINT, times=2)
    assert record["status"] == "interrupted"
    assert "stopped at once" in output  # no checkpoint written mid-step: the end of epoch 0's is continued from
    assert resumed["resumed_from"].endswith("last.ckpt")
    assert_identical(uninterrupted, resumed)


@pytest.mark.slow  # 3 runs; the SIGTERM and Ctrl-C tests above cover stops inside a call in the fast suite
def test_sigkill_inside_a_call_then_same_command_ends_identical(cli, tmp_path, uninterrupted):
    record, resumed, _ = stop_then_resume(cli, tmp_path, "SIGKILL", -signal.SIGKILL)
    assert record["status"] == "running"  # what a dead machine leaves behind
    assert_identical(uninterrupted, resumed)


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


def test_a_run_restarted_without_a_checkpoint_drops_the_killed_processs_csv_rows(run_train, make_cfg, tmp_path):
    """issue 34: a run killed before its first checkpoint and started again kept the dead process's rows (steps
    logged twice)."""
    from aelab.run.job import run_job

    _, first = run_train("model=mlp", "trainer.max_epochs=1", name="rows")
    stale = (first / "csv" / "metrics.csv").read_text()
    for path in [*(first / "checkpoints").iterdir(), first / "metrics.json"]:  # as if killed before its record
        path.unlink()
    (first / "csv" / "metrics.csv").write_text(stale)
    run_job(make_cfg("model=mlp", "trainer.max_epochs=1", name="rows"), cli=False)
    with open(first / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    train_steps = [r["step"] for r in rows if r.get("train/recon_loss")]
    assert train_steps and len(train_steps) == len(set(train_steps))  # each step once


def test_the_last_checkpoint_holds_the_last_epochs_training_loss(run_train):
    """issue 34: a run killed while testing and continued recorded the epoch-before's training loss as final (its
    checkpoint's history predated the module's epoch means)."""
    from aelab.store.checkpoints import load_checkpoint

    _, run_dir = run_train("model=mlp", "trainer.max_epochs=2", name="final")
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["callbacks"]
    final = next(v for k, v in state.items() if "MetricsHistory" in k)["final"]
    with open(run_dir / "csv" / "metrics.csv") as fh:
        means = [float(r["train/recon_loss_epoch"]) for r in csv.DictReader(fh) if r.get("train/recon_loss_epoch")]
    assert len(means) == 2 and final["train/recon_loss_epoch"] == pytest.approx(means[-1])  # epoch 2's, not 1's

"""One live writer per folder: a second process is refused, a killed launcher stops its jobs, and a run whose
process is gone reads as interrupted (and is still evaluated) instead of running forever."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, TINY
from test_resume import KILL_AT_EPOCH_2

LONG = [o for o in TINY if not o.startswith("trainer.max_epochs")] + ["model=mlp", "trainer.max_epochs=300"]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [str(BIN / "aelab-train"), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(predicate, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "metrics.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow  # ~19 s (two processes): CI runs it with the slow checks
def test_a_second_process_is_refused_from_a_live_run_folder(cli, tmp_path):
    from aelab.store.locks import owner_alive

    first = start([*LONG, "name=dup"], tmp_path)  # 300 epochs: it is still training when the second one starts
    run_dir = tmp_path / "outputs" / "runs" / "dup"
    wait_for(lambda: status(run_dir) == "running", what="the first run to start")
    second = cli(*LONG, "name=dup")
    assert second.returncode == 1
    assert (
        f"the run folder {run_dir} is in use by process {first.pid}" in second.stderr
        and "Traceback" not in second.stderr
    )
    assert status(run_dir) == "running" and alive(first.pid)  # the second one wrote nothing and stopped nobody
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert status(run_dir) == "interrupted" and not owner_alive(run_dir)  # the owner is gone: the folder is free
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert (
        len(names) == 2 and names[0].startswith("best-epoch=") and names[1] == "last.ckpt"
    )  # no -v1 twins, no tmp files


@pytest.mark.slow
def test_killing_a_joblib_sweep_stops_its_jobs(tmp_path):
    sweep = start(
        ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *LONG, "model.bottleneck=4,8", "sweep.name=k"],
        tmp_path,
    )
    jobs = [tmp_path / "outputs" / "sweeps" / "k" / f"model.bottleneck={b}" for b in (4, 8)]
    wait_for(
        lambda: all((j / "checkpoints" / "last.ckpt").is_file() for j in jobs), what="both jobs to finish an epoch"
    )
    workers = [json.loads((j / ".aelab.lock").read_text())["pid"] for j in jobs]
    assert sweep.pid not in workers and all(alive(p) for p in workers)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    wait_for(lambda: not any(alive(p) for p in workers), timeout=60, what="the orphaned workers to stop")
    from aelab.store.locks import owner_alive

    for job in jobs:  # each job stopped cleanly: recorded, checkpoint kept, folder free for a resume
        assert status(job) == "interrupted" and (job / "checkpoints" / "last.ckpt").is_file() and not owner_alive(job)


@pytest.mark.slow  # kills and resumes a training process, about 20 s
def test_a_killed_run_reads_as_interrupted_is_evaluated_and_its_half_written_files_go_on_resume(cli, tmp_path):
    killed = cli(*TINY, "model=mlp", "trainer.max_epochs=4", "name=k", *KILL_AT_EPOCH_2)
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "outputs" / "runs" / "k"
    assert status(run_dir) == "running"  # what the dead process left in the file
    compared = cli(str(run_dir), "--out", str(tmp_path / "cmp"), tool="aelab-compare")
    assert "1 interrupted" in compared.stdout, compared.stdout + compared.stderr
    evaluated = cli(f"run={run_dir}", "eval=[artifacts]", tool="aelab-eval")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "was interrupted" in evaluated.stdout + evaluated.stderr

    # taking the folder over removes the half-written files of the killed process
    stray = run_dir / "checkpoints" / ".last.tmp-999999.ckpt"  # what a kill during torch.save leaves
    stray.write_bytes(b"\0" * 4096)
    config_stray = run_dir / ".hydra" / ".config.tmp-999999.yaml"  # a kill while the run wrote its config
    config_stray.write_text("half")
    resumed = cli(*TINY, "model=mlp", "trainer.max_epochs=4", "name=k", *KILL_AT_EPOCH_2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not stray.exists() and not config_stray.exists() and status(run_dir) == "completed"
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]


def test_the_jobs_a_stopped_grid_sweep_never_began_are_named(tmp_path):
    from aelab.run.sweeps import never_started_jobs

    sweep = tmp_path / "st"
    (sweep / "model.bottleneck=2,model=mlp").mkdir(parents=True)
    marker = {
        "overrides": [
            "model=mlp,conv",
            "model.bottleneck=2,4",
            "trainer.max_epochs=3",
            "sweep.name=st",
            "hydra/launcher=joblib",
        ]
    }
    (sweep / "aelab_sweep.yaml").write_text(json.dumps(marker))  # JSON is YAML
    assert never_started_jobs(sweep) == [
        "model.bottleneck=4,model=mlp",
        "model.bottleneck=2,model=conv",
        "model.bottleneck=4,model=conv",
    ]
    (sweep / "aelab_sweep.yaml").write_text(json.dumps({"overrides": ["hparams_search=bottleneck_optuna"]}))
    assert never_started_jobs(sweep) == []  # an Optuna search's trials are not known ahead


def test_a_live_run_folder_is_refused_before_its_data_or_model_is_built(run_train, make_cfg, monkeypatch):
    from aelab.run import precheck
    from aelab.store.locks import FolderLock

    _, run_dir = run_train("trainer.max_epochs=1", name="live")
    other = FolderLock(run_dir).acquire()  # another owner (its own open file: not this process's registered lock)
    try:
        monkeypatch.setattr(precheck, "build_parts", lambda *a, **k: pytest.fail("built the parts of a live run"))
        cfg = make_cfg("trainer.max_epochs=2", name="live")
        with pytest.raises(precheck.Refused, match=f"the run folder {run_dir} is in use by process {os.getpid()}"):
            precheck.prepare(cfg, run_dir, checked=True)
    finally:
        other.release()

"""MLflow as a logger: a local SQLite store (a real database file), sweeps tagged, resumed runs continued, bad "
"stores."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import TINY
from test_resume import KILL_AT_EPOCH_2

QUICK = [*TINY, "model=mlp", "trainer.max_epochs=2", "logger=mlflow"]


def runs_in(store: Path, experiment: str = "aelab"):
    """The store's runs as a table, columns named as ``mlflow.search_runs`` names them (params.x, metrics.x, tags.x)."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return pd.DataFrame(
        [
            {
                "run_id": r.info.run_id,
                "status": r.info.status,
                "artifact_uri": r.info.artifact_uri,
                **{f"params.{k}": v for k, v in r.data.params.items()},
                **{f"metrics.{k}": v for k, v in r.data.metrics.items()},
                **{f"tags.{k}": v for k, v in r.data.tags.items()},
            }
            for r in runs
        ]
    )


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_a_run_and_a_three_job_sweep_land_in_the_sqlite_store(cli, tmp_path):
    single = cli(*QUICK, "name=one")
    assert single.returncode == 0, single.stderr[-3000:]
    sweep = cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *QUICK, "model.bottleneck=2,4,8", "sweep.name=bn"
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    store = tmp_path / "outputs" / "mlflow.db"
    assert store.is_file() and store.read_bytes()[:16] == b"SQLite format 3\x00"
    frame = runs_in(store)
    assert len(frame) == 4 and set(frame["status"]) == {"FINISHED"}
    run_dirs = [tmp_path / "outputs" / "runs" / "one"] + [
        tmp_path / "outputs" / "sweeps" / "bn" / f"model.bottleneck={b}" for b in (2, 4, 8)
    ]
    for run_dir in run_dirs:
        data = record(run_dir)
        (row,) = [r for _, r in frame.iterrows() if r["run_id"] == data["mlflow"]["run_id"]]
        assert row["tags.aelab.run_dir"] == str(run_dir) and row["tags.aelab.status"] == "completed"
        assert row["params.model.bottleneck"] == str(data["bottleneck"]) and row["params.model_name"] == "mlp"
        for key in ("test/recon_loss", "gap/recon_loss", "val/recon_loss"):  # metrics are the run's own numbers
            assert row[f"metrics.{key}"] == pytest.approx(data["final"][key], rel=1e-6)
        assert row["metrics.best/val/recon_loss"] == pytest.approx(data["best"]["val/recon_loss"], rel=1e-6)
        artifacts = Path(row["artifact_uri"].removeprefix("file://"))
        assert sorted(p.name for p in (artifacts / "images" / "samples" / "reconstruction").iterdir()) == [
            "step_000010.png",
            "step_000020.png",
        ]
    # one MLflow run per sweep job, grouped by the sweep's tag; metrics with their steps
    assert sorted(frame.loc[frame["tags.sweep"] == "bn", "params.model.bottleneck"]) == ["2", "4", "8"]
    from mlflow.tracking import MlflowClient

    history = MlflowClient(f"sqlite:///{store}").get_metric_history(
        record(run_dirs[0])["mlflow"]["run_id"], "val/recon_loss"
    )
    assert sorted(m.step for m in history) == [9, 19], sorted(m.step for m in history)

    # aelab-compare reads the same table back from the store
    result = cli(
        "--mlflow", f"sqlite:///{store}", "--group", "bn", "--out", str(tmp_path / "cmp"), tool="aelab-compare"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = (tmp_path / "cmp" / "runs.csv").read_text()
    assert "compared 3 runs (3 completed)" in result.stdout
    for b in (2, 4, 8):
        value = record(tmp_path / "outputs" / "sweeps" / "bn" / f"model.bottleneck={b}")["final"]["test/recon_loss"]
        assert f"{value:.6g}"[:6] in runs


@pytest.mark.slow
def test_a_killed_and_resumed_run_keeps_its_mlflow_run(cli, tmp_path):
    killed = cli(*QUICK, "trainer.max_epochs=4", "name=k", *KILL_AT_EPOCH_2)
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "outputs" / "runs" / "k"
    first_id = record(run_dir)["mlflow"]["run_id"]
    resumed = cli(*QUICK, "trainer.max_epochs=4", "name=k", *KILL_AT_EPOCH_2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    data = record(run_dir)
    assert data["status"] == "completed" and data["mlflow"]["run_id"] == first_id
    frame = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert list(frame["run_id"]) == [first_id] and list(frame["status"]) == ["FINISHED"]
    from mlflow.tracking import MlflowClient

    steps = [
        m.step
        for m in MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").get_metric_history(
            first_id, "val/recon_loss"
        )
    ]
    assert len(steps) == 4  # epochs 0-1 before the kill, 2-3 after, in the same run


def test_an_unreachable_server_falls_back_to_the_local_store_in_bounded_time(tmp_path, caplog):
    from aelab.tracking.mlflow import mlflow_logger, unreachable

    # the probe is what is bounded (connect_timeout + 0.5 s); creating the local SQLite store
    # afterwards takes MLflow's own migrations (seconds on a loaded 2-core machine), not retries
    started = time.time()
    assert unreachable("http://10.255.255.1:5000", 1.0) is not None
    assert time.time() - started < 2.5
    started = time.time()
    logger = mlflow_logger(
        tracking_uri="http://10.255.255.1:5000",
        local_store=str(tmp_path / "m.db"),
        save_dir=str(tmp_path / "r"),
        connect_timeout=1.0,
    )
    assert time.time() - started < 30  # not MLflow's minutes of HTTP retries
    assert logger._tracking_uri == f"sqlite:///{tmp_path / 'm.db'}"
    assert "unreachable" in caplog.text and "10.255.255.1" in caplog.text
    refused = mlflow_logger(
        tracking_uri="http://127.0.0.1:9", local_store=str(tmp_path / "m.db"), save_dir=str(tmp_path / "r")
    )
    assert refused._tracking_uri.startswith("sqlite:///")


def test_a_corrupt_or_locked_store_is_a_clear_error(cli, tmp_path):
    from aelab.errors import ConfigError
    from aelab.tracking import mlflow_logger

    garbage = tmp_path / "outputs" / "mlflow.db"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"this is not a database" * 100)
    result = cli(*QUICK, "name=bad")
    assert result.returncode != 0
    assert f"{garbage} is not a readable MLflow SQLite store" in result.stderr and "Traceback" not in result.stderr
    assert record(tmp_path / "outputs" / "runs" / "bad")["status"] == "failed"

    locked = tmp_path / "locked.db"
    sqlite3.connect(locked).execute("CREATE TABLE t (x)").connection.commit()
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    started = time.time()
    with pytest.raises(ConfigError, match="locked by another process"):
        mlflow_logger(local_store=str(locked), save_dir=str(tmp_path / "r"), connect_timeout=1.0)
    assert time.time() - started < 5
    holder.rollback()

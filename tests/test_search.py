"""aelab's Optuna search (aelab/run/search.py) on its own: the search space, slots without batches, several
workers on one study (a journal file, PostgreSQL), dead workers, old studies; and MLflow's server, which needs
the SQLAlchemy that this Optuna runs on. The search through the real command line: tests/test_sweeps.py."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from search_workers import DURATIONS, idle_fraction, jobs, make_search

HERE = Path(__file__).resolve().parent
WORKER = [sys.executable, str(HERE / "search_workers.py")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server of its own on loopback (Debian's binaries, as CI installs them), for the module."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL is not installed here (CI installs Debian's postgresql)")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver (the test extra's psycopg)")
    bindir = Path(found[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="aelab-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as its own user
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres user to run PostgreSQL as")
        os.chown(data, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "aelab")
    options = f"-p {port} -h 127.0.0.1 -k {data} -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-o", options, "-l", str(data / "log"), "-w", "start")
    try:
        yield f"postgresql+psycopg://aelab@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


def load(storage: str, name: str = "sleep"):
    import optuna

    from aelab.callbacks.pruning import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage))


def storage_for(kind: str, tmp_path: Path, request) -> str:
    if kind == "journal":
        return str(tmp_path / "optuna.journal")
    url = request.getfixturevalue("postgres_url")
    # a fresh database per test: the server is the module's
    import sqlalchemy

    name = f"t{int(time.time() * 1e6)}"
    with sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    return url.rsplit("/", 1)[0] + f"/{name}"


# ----------------------------------------------------------------------------- the search space
def test_the_search_space_grammar_becomes_optunas_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from aelab.errors import ConfigError
    from aelab.run.search import grid_choices, search_space

    space, fixed = search_space(
        [
            "model.bottleneck=choice(4, 8, 16)",
            "model.optimizer.lr=tag(log, interval(0.0001, 0.01))",
            "noise=choice(none, gaussian)",
            "data.batch_size=range(32, 128, 32)",
            "model.dropout=interval(0.0, 0.5)",
            "seed=3",
        ]
    )
    assert space["model.bottleneck"] == CategoricalDistribution([4, 8, 16])
    assert space["model.optimizer.lr"] == FloatDistribution(0.0001, 0.01, log=True)
    assert space["noise"] == CategoricalDistribution(["none", "gaussian"])
    assert space["data.batch_size"] == IntDistribution(32, 128, step=32)
    assert space["model.dropout"] == FloatDistribution(0.0, 0.5)
    assert fixed == {"seed": "3"}
    assert grid_choices("data.batch_size", space["data.batch_size"]) == [32, 64, 96, 128]
    with pytest.raises(ConfigError, match="hydra.sweeper.params.model.dropout: the grid sampler"):
        grid_choices("model.dropout", space["model.dropout"])


# ----------------------------------------------------------------------------- no batches
def test_a_slot_asks_for_its_next_trial_as_soon_as_its_trial_ends(tmp_path):
    """Trials of 0.4 s and 2 s by turns on 2 slots: the slots stay busy (the figure docs/sweeps.md gives for
    aelab-train is measured by scripts/bench_search_idle.py). The batches of two that the search ran before
    would have idled 40 % of the slots' time on these trials."""
    n = 6
    make_search(tmp_path, str(tmp_path / "optuna.journal"), n_trials=n, n_jobs=2).sweep([])
    records = jobs(tmp_path)
    assert [r["trial"] for r in records] == list(range(n))
    idle = idle_fraction(records, slots=2)
    durations = [DURATIONS[i % len(DURATIONS)] for i in range(n)]
    batched = 1 - sum(durations) / (2 * sum(max(durations[i : i + 2]) for i in range(0, n, 2)))
    assert batched == pytest.approx(0.4)
    assert idle <= 0.10, f"the slots idled {idle:.0%} of the time while trials were still to start"


# ----------------------------------------------------------------------------- several workers, one study
@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_two_workers_finish_n_trials_together_each_trial_once(kind, tmp_path, request):
    storage = storage_for(kind, tmp_path, request)
    n = 8
    workers = [make_search(tmp_path, storage, n_trials=n, n_jobs=1, durations=(0.1, 0.3)) for _ in range(2)]
    errors = []

    def work(search):
        try:
            search.sweep([])
        except BaseException as exc:  # noqa: BLE001 — reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    records = jobs(tmp_path)  # each job wrote <trial>.json exclusively: a trial run twice would have failed
    assert [r["trial"] for r in records] == list(range(n))
    study = load(storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * n
    assert len({t.system_attrs["aelab:worker"] for t in study.trials}) == 1  # (the same process: one host:pid)
    assert len({t.params["x"] for t in study.trials}) == n  # each worker's sampler draws its own values
    assert sum(w._closed for w in workers) == n and all(w._closed for w in workers)


@pytest.mark.slow  # three processes that import aelab's search, ~20 s
@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_a_worker_killed_mid_trial_leaves_the_others_running_and_its_trial_closed_once(kind, tmp_path, request):
    storage = storage_for(kind, tmp_path, request)
    n = 8
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), *sys.path]))
    start = lambda *extra: subprocess.Popen(  # noqa: E731
        [*WORKER, str(tmp_path), storage, str(n), "1", *extra], env=env, stderr=subprocess.PIPE, text=True
    )
    survivors = [start(), start()]
    dying = start("2")  # dies (SIGKILL) in the middle of its second trial
    assert dying.wait(120) == -9
    for worker in survivors:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-3000:]
    study = load(storage)
    dead = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(dead) == 1 and dead[0].system_attrs["aelab:worker"].endswith(f":{dying.pid}")
    assert (tmp_path / f"{dead[0].number}.started").is_file() and not (tmp_path / f"{dead[0].number}.json").exists()
    (retried,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead[0].number]
    assert retried.state.name == "COMPLETE" and retried.params == dead[0].params  # run again, same values
    complete = [t.number for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == n and [r["trial"] for r in jobs(tmp_path)] == complete
    results = (tmp_path / "optimization_results.yaml").read_text()
    assert "complete: 8" in results and "interrupted: 1" in results


# ----------------------------------------------------------------------------- dead workers, in one process
def test_a_trial_without_heartbeats_is_closed_once_and_queued_again(tmp_path):
    """Optuna's heartbeat protocol on aelab's journal storage: a stale running trial is failed by the first worker
    to look, once, and queued again with its values; a live one is left alone."""
    import optuna
    from optuna.trial import TrialState

    from aelab.run.search import HEARTBEAT, StaleTrials, worker_storage

    path = str(tmp_path / "optuna.journal")
    storage = worker_storage(path, heartbeat_interval=1, grace_period=5, on_stale=StaleTrials(max_retry=1))
    study = optuna.create_study(study_name="s", storage=storage)
    dead, live = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), study.ask()
    storage.set_trial_system_attr(dead._trial_id, HEARTBEAT, time.time() - 60)
    storage.record_heartbeat(live._trial_id)
    assert storage._get_stale_trial_ids(study._study_id) == []  # (the start is recent: the grace counts from it)
    storage.grace_period = 2
    time.sleep(2.2)
    storage.record_heartbeat(live._trial_id)
    other = worker_storage(path, heartbeat_interval=1, grace_period=2, on_stale=StaleTrials(max_retry=1))
    for seen_by in (study, optuna.load_study(study_name="s", storage=other)):  # two workers look: closed once
        optuna.storages.fail_stale_trials(seen_by)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert study.trials[2].params == dead.params and study.trials[2].system_attrs["failed_trial"] == 0


# ----------------------------------------------------------------------------- old sweep folders
def test_a_study_of_optuna_2_is_refused_with_the_upgrade_command_then_read(tmp_path):
    import optuna

    from aelab.run.precheck import Refused
    from aelab.run.search import default_storage

    with sqlite3.connect(tmp_path / "optuna.db") as db:  # an aelab sweep folder's study, written by Optuna 2.10.1
        db.executescript((HERE / "fixtures" / "optuna2_study.sql").read_text())
    url = default_storage(tmp_path)
    assert url == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    search = make_search(tmp_path, None, n_trials=4, n_jobs=1)
    with pytest.raises(Refused) as refused:
        search.sweep([])
    message = str(refused.value)
    assert "\n" not in message and "written by Optuna 2.10.1" in message
    assert f"optuna storage upgrade --storage {url}" in message
    optuna_cli = [sys.executable, "-c", "import sys, optuna.cli; sys.exit(optuna.cli.main())"]  # the `optuna` command
    subprocess.run([*optuna_cli, "storage", "upgrade", "--storage", url], check=True, capture_output=True, timeout=120)
    study = optuna.load_study(study_name="bottleneck", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert study.best_value == pytest.approx(0.03)


# ----------------------------------------------------------------------------- MLflow's server on SQLAlchemy 2
@pytest.mark.slow  # MLflow's server starts in ~10-20 s
def test_mlflow_server_serves_a_logged_run(tmp_path, monkeypatch):
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # mlflow.set_tracking_uri also sets $MLFLOW_TRACKING_URI, which every aelab-train this worker starts later would
    # log to: set through monkeypatch, so that it is gone again after this test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    with mlflow.start_run(experiment_id=mlflow.create_experiment("aelab")) as run:
        mlflow.log_metric("val/recon_loss", 0.25, step=3)
    port = free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen(
        [str(mlflow_bin), "server", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run.info.run_id}"
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    found = json.loads(answer.read())
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()[-3000:]
                assert time.time() < deadline, "mlflow server did not answer in 90 s"
                time.sleep(0.5)
        metrics = {m["key"]: m["value"] for m in found["run"]["data"]["metrics"]}
        assert metrics == {"val/recon_loss": 0.25}
    finally:
        server.terminate()
        server.wait(30)

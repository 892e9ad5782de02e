"""Sweeps through the real command line: folders, launchers, failures, resume, Optuna, W&B groups."""

import json
import re
import time
from pathlib import Path

import pytest
from conftest import TINY
from omegaconf import OmegaConf
from wandb_files import offline_runs, read_offline_run

from aelab.analysis.compare import compare

SWEEP_BASE = [o for o in TINY if not o.startswith("trainer.max_epochs")] + [
    "data.num_train=2000",
    "data.val_size=300",
    "model=mlp",
    "data.batch_size=32",
    "trainer.max_epochs=3",
]


def metrics_of(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


@pytest.mark.slow  # a parallel sweep and aelab-compare as subprocesses, about 35 s
def test_joblib_bottleneck_sweep_compares_and_tracks_each_job(cli, tmp_path):
    result = cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *SWEEP_BASE,
        "model.bottleneck=2,8,32",
        "logger=wandb",
        "sweep.name=bneck",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "outputs" / "sweeps" / "bneck"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["model.bottleneck=2", "model.bottleneck=32", "model.bottleneck=8"]
    assert "3 done, 0 failed, 0 skipped" in result.stdout + result.stderr
    # the sweep ends with a table of its jobs (objective, status) and the command to compare them
    assert "compare: aelab-compare outputs/sweeps/bneck" in result.stdout
    for job in jobs:
        (line,) = [s for s in result.stdout.splitlines() if s.split() and s.split()[0] == job]
        objective = metrics_of(sweep / job)["objective"]["value"]
        assert line.split()[-1] == "completed" and float(line.split()[1]) == pytest.approx(objective, rel=1e-3)
    # joblib: each job gets cores / n_jobs threads
    for job in jobs:
        assert "1 CPU thread" in (sweep / job / "train.log").read_text() or __import__("os").cpu_count() < 2

    out = compare([sweep])
    table = out.summary
    assert len(table) == 3
    assert list(table["model.bottleneck"]) == [2, 8, 32]
    losses = list(table["test/recon_loss"])
    assert losses[0] > losses[1] > losses[2], losses
    for _, row in table.iterrows():  # the table's numbers are the runs' own
        m = metrics_of(sweep / f"model.bottleneck={int(row['model.bottleneck'])}")
        assert row["test/recon_loss"] == pytest.approx(m["final"]["test/recon_loss"])
        assert row["gap/recon_loss"] == pytest.approx(m["final"]["gap/recon_loss"])
        assert row["best/val/recon_loss"] == pytest.approx(m["best"]["val/recon_loss"])
        assert row["params"] == m["params"]
    for name in (
        "comparison.csv",
        "comparison.md",
        "runs.csv",
        "report.md",
        "overview.png",
        "test_recon_loss.png",
        "gap_recon_loss.png",
        "curves.png",
        "recon_grid.png",
    ):
        assert (out.out_dir / name).is_file(), name
    report = (out.out_dir / "report.md").read_text()
    assert "![overview](overview.png)" in report and "model.bottleneck" in report

    # one W&B run per job, never merged, all in the sweep's group, bottleneck at the top of the config
    runs = [read_offline_run(folder) for job in jobs for folder in offline_runs(sweep / job)]
    assert len(runs) == 3 and len({r["run_id"] for r in runs}) == 3
    assert {r["group"] for r in runs} == {"bneck"}
    assert sorted(r["config"]["bottleneck"] for r in runs) == [2, 8, 32]
    assert all(r["exit_code"] == 0 for r in runs)
    assert all(r["summary"]["gap/recon_loss"].keys() == {"last"} for r in runs)


@pytest.mark.slow  # two sweeps as subprocesses, about 30 s
def test_failed_job_is_recorded_and_resume_skips_completed_jobs(cli, tmp_path):
    args = ["-m", *SWEEP_BASE, "trainer.max_epochs=1", "model.optimizer.lr=0.001,1e30"]  # the second diverges (NaN)
    first = cli(*args)
    assert first.returncode == 1, first.stderr[-3000:]  # the sweep goes on, and then says it had a failure
    out = first.stdout + first.stderr
    assert "1 done, 1 failed, 0 skipped" in out
    assert "failed: model.optimizer.lr=1e+30: the training loss became nan" in out
    assert "aelab-train: 1 of the sweep's jobs failed: model.optimizer.lr=1e+30" in first.stderr
    (sweep,) = (tmp_path / "outputs" / "sweeps").iterdir()
    good, bad = sweep / "model.optimizer.lr=0.001", sweep / "model.optimizer.lr=1e+30"
    assert metrics_of(good)["status"] == "completed"
    assert metrics_of(bad)["status"] == "failed" and "became nan" in metrics_of(bad)["error"]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["counts"] == {"completed": 1, "pruned": 0, "failed": 1, "skipped": 0, "stale": 0, "missing": 0}

    stamp = {p: p.stat().st_mtime_ns for p in [good / "metrics.json", good / "checkpoints" / "last.ckpt"]}
    time.sleep(1)
    again = cli(*args, "sweep.resume=true")
    assert again.returncode == 1, again.stderr[-3000:]
    out = again.stdout + again.stderr
    assert "skipping model.optimizer.lr=0.001: completed earlier" in out
    assert "0 done, 1 failed, 1 skipped" in out
    assert [p.name for p in (tmp_path / "outputs" / "sweeps").iterdir()] == [sweep.name]  # same folder
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp  # not retrained, nothing overwritten

    # comparing a sweep with a failed job: the failure is listed, the good job tabulated
    result = compare([sweep])
    assert len(result.summary) == 1
    assert [p["status"] for p in result.table.problems] == ["failed"]
    assert "failed" in (result.out_dir / "report.md").read_text()


def test_a_new_sweep_never_reuses_an_earlier_folder(cli, tmp_path):
    for _ in range(2):
        result = cli(
            "-m",
            *SWEEP_BASE,
            "trainer.max_epochs=1",
            "data.limit_train=64",
            "model.bottleneck=2",
            "hydra.sweep.dir=outputs/sweeps/same",
        )
        assert result.returncode == 0
    # an explicit folder is continued (its completed job skipped), not overwritten
    assert "skipping" in result.stdout + result.stderr
    from aelab.run.folders import unique_dir as _unique_dir

    a = _unique_dir(tmp_path / "outputs" / "sweeps" / "t")
    b = _unique_dir(tmp_path / "outputs" / "sweeps" / "t")
    assert a != b and a.is_dir() and b.name == "t_2"


@pytest.mark.slow  # submitit's local executor polls its jobs: ~18 s; CI runs it
def test_submitit_local_runs_a_two_job_sweep(cli, tmp_path):
    result = cli(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        *SWEEP_BASE,
        "trainer.max_epochs=1",
        "model.bottleneck=2,4",
        "sweep.name=sub",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "outputs" / "sweeps" / "sub"
    assert [metrics_of(sweep / f"model.bottleneck={b}")["status"] for b in (2, 4)] == ["completed", "completed"]
    assert (sweep / ".submitit").is_dir()
    assert "2 done, 0 failed" in result.stdout + result.stderr


@pytest.mark.slow  # subprocess-heavy (~20 s): runs with the slow checks, which CI runs (make test < 5 min)
def test_optuna_search_returns_the_best_value(cli, tmp_path):
    result = cli(
        "-m",
        "hparams_search=bottleneck_optuna",
        "hydra.sweeper.n_trials=3",
        *SWEEP_BASE,
        "trainer.max_epochs=1",
        "sweep.name=opt",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "outputs" / "sweeps" / "opt"
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    values = [metrics_of(job)["objective"]["value"] for job in sweep.iterdir() if (job / "metrics.json").is_file()]
    assert len(values) == 3
    assert best.best_value == pytest.approx(min(values))
    assert set(best.best_params) == {"model.bottleneck", "model.optimizer.lr", "noise"}


@pytest.mark.slow
def test_a_killed_optuna_search_continues_its_stored_study_and_prunes_hopeless_trials(cli, tmp_path):
    import signal

    import optuna
    from optuna.trial import TrialState

    from aelab.callbacks.pruning import open_storage

    search = [
        "-m",
        "hparams_search=bottleneck_optuna",
        "hydra.sweeper.n_trials=6",
        *SWEEP_BASE,
        "trainer.max_epochs=3",
        "search.startup_trials=2",
        "search.warmup_epochs=0",
        "sweep.name=opt",
        "hydra.sweeper.heartbeat_interval=1",  # the killed trial is closed 3 s after its last heartbeat
        "hydra.sweeper.grace_period=3",
        # the process dies (SIGKILL) in the 4th trial, after trials 0-2 finished
        "+callbacks.fault._target_=aelab.callbacks.FaultInjection",
        "+callbacks.fault.at_epoch=0",
        "+callbacks.fault.run_dir=${paths.run_dir}",
        "+callbacks.fault.only_run=3_*",
    ]
    killed = cli(*search)
    assert killed.returncode == -signal.SIGKILL
    sweep = tmp_path / "outputs" / "sweeps" / "opt"
    storage = open_storage(str(sweep / "optuna.journal"))
    study = optuna.load_study(study_name="bottleneck", storage=storage)
    assert [t.state for t in study.trials] == [*[t.state for t in study.trials[:3]], TrialState.RUNNING]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials[:3])

    resumed = cli(*search)  # the same command: the same folder, the same study, on to 6 finished trials
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # (the killed trial is closed before or after this line: when its last heartbeat is 3 s old)
    said = resumed.stdout + resumed.stderr
    assert re.search(r"3 trials finished earlier, (1 running in other workers, 2|0 running .*, 3) to go", said)
    study = optuna.load_study(study_name="bottleneck", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 7 and states[3] == TrialState.FAIL  # the killed trial, closed as failed once
    (retried,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == 3]
    assert retried.params == study.trials[3].params  # and run again with its values
    finished = [s for s in states if s in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "the median pruner stopped no trial"
    for trial in study.trials:
        (job,) = sweep.glob(f"{trial.number}_*")
        record = metrics_of(job)
        if trial.state == TrialState.PRUNED:  # recorded as pruned, not failed, with fewer epochs than asked for
            assert record["status"] == "pruned" and "pruned by Optuna" in record["error"]
            assert record["epochs"] < 3 and len(trial.intermediate_values) == record["epochs"]
        elif trial.state == TrialState.COMPLETE:
            assert record["status"] == "completed" and trial.value == pytest.approx(record["objective"]["value"])
            assert sorted(trial.intermediate_values) == [0, 1, 2]
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.trials.pruned == len(pruned) and results.trials.fail == 1
    compared = cli(str(sweep), tool="aelab-compare")
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert f"{len(pruned)} pruned" in compared.stdout


@pytest.mark.slow  # two aelab-train processes, ~40 s
def test_two_search_processes_on_one_sweep_folder_share_its_study(tmp_path):
    import os
    import subprocess

    import optuna
    from conftest import BIN

    from aelab.callbacks.pruning import open_storage

    command = [
        str(BIN / "aelab-train"),
        "-m",
        "hparams_search=bottleneck_optuna",
        "hydra.sweeper.n_trials=6",
        *SWEEP_BASE,
        "trainer.max_epochs=1",
        "sweep.name=opt",
    ]
    env = dict(os.environ, WANDB_MODE="offline")
    workers = [subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]  # the second was not refused the sweep folder
    sweep = tmp_path / "outputs" / "sweeps" / "opt"
    study = optuna.load_study(study_name="bottleneck", storage=open_storage(str(sweep / "optuna.journal")))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6  # six trials, none twice, none lost
    assert len({t.system_attrs["aelab:worker"] for t in study.trials}) == 2  # both worked
    for trial in study.trials:
        (job,) = sweep.glob(f"{trial.number}_*")  # each trial its own run folder
        assert metrics_of(job)["objective"]["value"] == pytest.approx(trial.value)


def test_an_invalid_swept_value_is_refused_before_the_first_job(cli, tmp_path):
    started = time.time()
    result = cli("-m", *SWEEP_BASE, "model.bottleneck=2,0,8", "model=mlp,conv")
    assert result.returncode == 1 and time.time() - started < 30  # one composition, no job: ~3 s idle
    # one line for the value, naming the jobs of the product that have it (every job's config is checked)
    assert (
        "model.bottleneck is the size of the code and must be a positive integer (got 0) (in the sweep's jobs "
        "model=mlp,model.bottleneck=0, model=conv,model.bottleneck=0)" in result.stderr
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "outputs").exists()  # no job ran, no folder was made


def test_sweep_over_an_unknown_key_is_refused(cli):
    result = cli("-m", *SWEEP_BASE, "model.nope=1,2")
    assert result.returncode != 0
    assert "nope" in result.stderr and "Traceback" not in result.stderr


def test_compare_refuses_bad_folders(tmp_path, run_train):
    from aelab.errors import RunFolderError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunFolderError, match="holds no aelab runs"):
        compare([empty])
    with pytest.raises(RunFolderError, match="does not exist"):
        compare([tmp_path / "missing"])
    # mixed incompatible runs: an MSE run next to a BCE run
    _, a = run_train("model=mlp", name="mix/a")
    _, b = run_train("model=mlp", "model.loss=bce", name="mix/b")
    for run in (a, b):  # compose() writes no .hydra folder; give the runs one as the CLI does
        (run / ".hydra").mkdir(exist_ok=True)
    import shutil

    for run, loss in ((a, "mse"), (b, "bce")):
        cfg = OmegaConf.create({"model": {"loss": loss, "bottleneck": 32}, "seed": 0})
        OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create([f"model.loss={loss}"]), run / ".hydra" / "overrides.yaml")
    with pytest.raises(RunFolderError, match="mixed incompatible runs"):
        compare([tmp_path / "mix"])
    shutil.rmtree(tmp_path / "mix")


def test_compare_cli_reports_a_bad_folder_in_one_line(cli, tmp_path):
    result = cli(str(tmp_path), tool="aelab-compare")
    assert result.returncode == 2
    assert result.stderr.startswith("aelab-compare: error:") and "Traceback" not in result.stderr


def test_one_class_sweeps_get_a_mean_row_over_classes():
    from aelab.analysis.table import aggregate, markdown_table, table_from_records, with_group_means

    records = [
        {
            "run": f"r{c}",
            "status": "completed",
            "seed": 0,
            "eval/auroc": a,
            "_config": {"data.normal_class": c, "seed": 0},
            "_choices": {"model": "conv"},
            "_overrides": ["data.normal_class"],
        }
        for c, a in enumerate([0.8, 0.9, 1.0])
    ]
    table = table_from_records(records)
    assert table.setting_keys == ["data.normal_class"]
    summary = with_group_means(aggregate(table), table)
    mean = summary[summary["data.normal_class"] == "mean"].iloc[0]
    assert mean["eval/auroc"] == pytest.approx(0.9) and mean["eval/auroc n"] == 3
    assert "| mean | 0.90 ± 0.10 | 3 |" in markdown_table(summary, table)  # two figures of a spread starting with 1


@pytest.mark.slow
def test_compare_a_sweep_over_the_input_shape_tabulates_and_skips_the_shared_grid(cli, tmp_path):
    result = cli("-m", *SWEEP_BASE, "trainer.max_epochs=1", "data.channels=1,3", "sweep.name=ch")
    assert result.returncode == 0, result.stderr[-3000:]
    compared = cli(str(tmp_path / "outputs" / "sweeps" / "ch"), "--out", str(tmp_path / "cmp"), tool="aelab-compare")
    assert compared.returncode == 0 and "Traceback" not in compared.stderr, compared.stderr[-3000:]
    assert "compared 2 runs (2 completed)" in compared.stdout
    assert "inputs of different shapes" in (tmp_path / "cmp" / "report.md").read_text()
    assert (tmp_path / "cmp" / "comparison.csv").is_file()


def test_compare_carries_the_gaps_interval_into_its_plot(tmp_path):
    from aelab.analysis.plots import metric_figures
    from aelab.analysis.table import aggregate, table_from_records

    records = [
        {
            "run": f"b{b}s{s}",
            "status": "completed",
            "seed": s,
            "gap/recon_loss": g,
            "gap/recon_loss_ci95": 0.001,
            "test/recon_loss": 0.02,
            "_config": {"model.bottleneck": b, "seed": s},
            "_choices": {"model": "mlp"},
            "_overrides": ["model.bottleneck", "seed"],
        }
        for b, gaps in ((2, (0.0001, 0.0003)), (64, (0.004, 0.006)))
        for s, g in enumerate(gaps)
    ]
    table = table_from_records(records, ["gap/recon_loss", "test/recon_loss"])
    summary = aggregate(table)
    # the interval rides along with the gap, so the plot can tell a gap inside its noise floor from one outside it
    assert list(summary["gap/recon_loss_ci95"]) == pytest.approx([0.001, 0.001])
    files = metric_figures(summary, table, tmp_path)
    assert files["gap/recon_loss"].is_file() and files["gap/recon_loss"].with_suffix(".pdf").is_file()
    import matplotlib.pyplot as plt

    from aelab.analysis.plots import Panel, draw_metric

    fig, ax = plt.subplots()
    drawn = draw_metric(ax, table, Panel("gap/recon_loss"))
    counts, interval = drawn.counts, drawn.interval
    from matplotlib.collections import PolyCollection

    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]  # the shaded interval around the mean gap
    assert len(bands) == 1 and "95 %" in interval and counts == [2, 2]
    plt.close(fig)


def test_a_key_given_as_a_constant_and_swept_is_refused_before_the_sweep_starts():
    """issue 34: ``-m model.bottleneck=4 ... model.bottleneck=2,8`` trained job 1 in the sweep folder itself, refused
    job 2 and ended "0 done, 0 failed" with exit 0."""
    from aelab.run.sweeps import twice_given

    assert twice_given(["model.bottleneck=4", "seed=0,1", "model.bottleneck=2,8"]) == [
        "model.bottleneck is given 2 times (model.bottleneck=4, model.bottleneck=2,8): give it once, with every value "
        "to sweep"
    ]
    assert twice_given(["model.bottleneck=2,8", "seed=0,1"]) == []


def test_a_sweep_or_search_with_an_added_key_passes_its_checks(make_cfg):
    """``-m ... +callbacks.fault._target_=...``: the job configs the checks compose took the "+key" twice and Hydra
    refused it ("Could not append to config. An item is already at ..."), so such a sweep or search never started."""
    from aelab.run.search import search_problems
    from aelab.run.sweeps import sweep_problems

    added = [
        "+callbacks.fault._target_=aelab.callbacks.FaultInjection",
        "+callbacks.fault.at_epoch=5",
        "+callbacks.fault.run_dir=${paths.run_dir}",  # an interpolation stays one (the search re-rendered it escaped)
    ]
    cfg = make_cfg(*added, "model.bottleneck=2", multirun=True)
    assert sweep_problems(cfg, [*added, "model.bottleneck=2,4"]) == []
    search = make_cfg(*added, "hparams_search=bottleneck_optuna", multirun=True)
    assert search_problems(search, [*added, "hparams_search=bottleneck_optuna"]) == []

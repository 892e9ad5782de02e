"""One config per run folder: a changed config never continues, skips, rewrites or mislabels a run.

Each probe starts from a real run folder — a named MLP run killed (SIGKILL) after its first epoch, or
a completed one — runs the same name again with another value, and asserts that the command is
refused before anything is written: every file the run had is byte for byte the same afterwards
(``.hydra/``, ``metrics.json``, the checkpoints), and the message names each changed key with both
values and the two ways out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import TINY, run_cli

BASE = [*TINY, "model=mlp", "model.bottleneck=4"]
KILL = [
    "+callbacks.fault._target_=aelab.callbacks.FaultInjection",
    "+callbacks.fault.at_epoch=1",
    "+callbacks.fault.signal=SIGKILL",
    "+callbacks.fault.marker_dir=${paths.run_dir}",
]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file a run recorded (the lock and the console log aside), by content."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (".aelab.lock", "train.log")
    }


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A named run killed after epoch 1 of 2 (bottleneck 4): a last.ckpt, a record that says running."""
    root = tmp_path_factory.mktemp("identity")
    result = run_cli([*BASE, "trainer.max_epochs=2", "name=stopped", *KILL], root)
    assert result.returncode != 0  # killed
    run_dir = root / "outputs" / "runs" / "stopped"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    return root, run_dir


@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    root = tmp_path_factory.mktemp("identity_done")
    result = run_cli([*BASE, "name=done"], root)
    assert result.returncode == 0, result.stderr[-2000:]
    return root, root / "outputs" / "runs" / "done"


@pytest.mark.parametrize(
    "change, shown",
    [
        (["model.bottleneck=8"], ["model.bottleneck: 4 → 8"]),
        (["model.optimizer.lr=0.05", "noise=gaussian"], ["model.optimizer.lr: 0.001 → 0.05", "noise._target_"]),
    ],
)
def test_continuing_a_stopped_run_under_another_config_is_refused_and_rewrites_nothing(stopped, change, shown):
    root, run_dir = stopped
    before = snapshot(run_dir)
    result = run_cli([*BASE, "trainer.max_epochs=2", "name=stopped", *change], root)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    for line in shown:
        assert line in result.stderr, result.stderr[-2000:]
    assert "another name=" in result.stderr and "on_config_change=continue" in result.stderr
    assert "interrupted after 1 epochs" in result.stderr  # killed after its first epoch (its record still said 0)
    assert snapshot(run_dir) == before  # .hydra/, metrics.json and checkpoints untouched


def test_a_checkpoint_of_another_model_size_is_named_before_anything_is_written(stopped):
    """Continuing anyway (on_config_change=continue) with another bottleneck cannot load the checkpoint: one line, and
    the untrained model of the new size is never written over last.ckpt."""
    root, run_dir = stopped
    before = snapshot(run_dir)
    result = run_cli(
        [*BASE, "trainer.max_epochs=2", "name=stopped", "model.bottleneck=8", "on_config_change=continue"], root
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "holds a model of another shape than this config builds" in result.stderr, result.stderr[-2000:]
    assert "[4, 256] in the checkpoint, [8, 256] now" in result.stderr
    assert snapshot(run_dir) == before


def test_a_completed_run_under_another_config_is_refused_not_skipped_and_relabelled(completed):
    root, run_dir = completed
    before = snapshot(run_dir)
    result = run_cli([*BASE, "name=done", "model.bottleneck=8"], root)
    assert result.returncode != 0 and "model.bottleneck: 4 → 8" in result.stderr
    assert "a completed run is not trained again" in result.stderr
    assert snapshot(run_dir) == before
    log = (run_dir / "train.log").read_bytes()
    same = run_cli([*BASE, "name=done", "trainer.max_epochs=1"], root)  # keys meant to change do not count
    assert same.returncode == 0 and "skipping done" in same.stdout + same.stderr
    assert snapshot(run_dir) == before  # a skipped run rewrites nothing either
    assert (run_dir / "train.log").read_bytes() == log  # nor adds to its log


@pytest.mark.slow  # ~18 s of subprocesses: with the slow checks, so make test keeps its 5 minutes on a slow hour
def test_continuing_with_a_change_accepted_records_it(tmp_path):
    result = run_cli([*BASE, "trainer.max_epochs=2", "name=grow", *KILL], tmp_path)
    assert result.returncode != 0
    run_dir = tmp_path / "outputs" / "runs" / "grow"
    result = run_cli(
        [*BASE, "trainer.max_epochs=2", "name=grow", "model.optimizer.lr=0.002", "on_config_change=continue"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 2
    (change,) = record["config_changes"]
    assert change["key"] == "model.optimizer.lr" and change["before"] == 0.001 and change["after"] == 0.002
    assert change["at_step"] == 10  # the step of the checkpoint it continued from: epoch 1 of 600 images at 64
    assert "lr: 0.002" in (run_dir / ".hydra" / "config.yaml").read_text()  # the config now says what trained last


@pytest.mark.slow  # 16-31 s: runs with the slow checks (make test stays < 5 min)
def test_a_sweep_rerun_with_a_changed_constant_is_refused_before_its_first_job(tmp_path):
    sweep = [*TINY, "model=mlp", "model.bottleneck=2,4", "sweep.name=s"]
    first = run_cli(["-m", *sweep], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    sweep_dir = tmp_path / "outputs" / "sweeps" / "s"
    before = {job.name: snapshot(job) for job in sweep_dir.iterdir() if job.is_dir()}
    again = run_cli(["-m", *sweep, "model.optimizer.lr=0.01"], tmp_path)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert "holds jobs run with another config" in again.stderr and "model.optimizer.lr: 0.001 → 0.01" in again.stderr
    assert "model.bottleneck=2" in again.stderr and "model.bottleneck=4" in again.stderr  # each job named
    assert {job.name: snapshot(job) for job in sweep_dir.iterdir() if job.is_dir()} == before


def test_a_negative_epoch_count_is_refused_before_any_folder(tmp_path):
    result = run_cli([*TINY, "trainer.max_epochs=-5"], tmp_path)
    assert result.returncode != 0 and "trainer.max_epochs=-5 must be -1 (no limit) or >= 0" in result.stderr
    assert not (tmp_path / "outputs" / "runs").exists()


def test_an_unreadable_recorded_config_is_named_not_compared(tmp_path):
    """The one comparison the single run's and the sweep's checks share: a garbage config.yaml is a ConfigError."""
    from omegaconf import OmegaConf

    from aelab.errors import ConfigError
    from aelab.store.fingerprint import changes_since

    recorded = tmp_path / "config.yaml"
    recorded.write_text("model: {bottleneck: 8}\nseed: 0\n")
    now = OmegaConf.create({"model": {"bottleneck": 16}, "seed": 0, "hydra": {"x": 1}})
    assert changes_since(recorded, now) == [("model.bottleneck", 8, 16)]
    recorded.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="config.yaml cannot be read"):
        changes_since(recorded, now)


def test_ckpt_path_into_a_folder_that_holds_a_run_is_refused_and_changes_nothing(run_train, make_cfg):
    """issue 34: ``name=A model.optimizer.lr=0.05 ckpt_path=<B>/checkpoints/last.ckpt`` on a completed run A
    rewrote A's checkpoints, .hydra files and metrics.json without recording a change."""
    from aelab.errors import ConfigError
    from aelab.run.job import run_job

    _, a_dir = run_train("model=mlp", name="A")
    _, b_dir = run_train("model=mlp", name="B")
    before = {p: p.read_bytes() for p in a_dir.rglob("*") if p.is_file() and p.name != ".aelab.lock"}
    cfg = make_cfg("model=mlp", "model.optimizer.lr=0.05", f"ckpt_path={b_dir / 'checkpoints' / 'last.ckpt'}", name="A")
    with pytest.raises(
        ConfigError, match=r"holds a run \(completed after 1 epochs\) that did not start from ckpt_path="
    ):
        run_job(cfg, cli=False)
    after = {p: p.read_bytes() for p in a_dir.rglob("*") if p.is_file() and p.name != ".aelab.lock"}
    assert after == before


def test_the_same_fine_tuning_command_again_is_skipped_not_refused(run_train, make_cfg):
    """A run started from ckpt_path= is the same run when the same command comes again: skipped once completed."""
    from aelab.run.job import run_job

    _, b_dir = run_train("model=mlp", name="B")
    start = f"ckpt_path={b_dir / 'checkpoints' / 'last.ckpt'}"
    _, ft_dir = run_train("model=mlp", "trainer.max_epochs=2", start, name="ft")
    before = {p: p.read_bytes() for p in ft_dir.rglob("*") if p.is_file() and p.name != ".aelab.lock"}
    run_job(make_cfg("model=mlp", "trainer.max_epochs=2", start, name="ft"), cli=False)
    after = {p: p.read_bytes() for p in ft_dir.rglob("*") if p.is_file() and p.name not in (".aelab.lock", "train.log")}
    assert after == {p: v for p, v in before.items() if p.name != "train.log"}


def test_a_run_continued_on_other_images_in_the_same_layout_is_refused(run_train, make_cfg, tmp_path):
    """issue 34: continuing with paths.data_dir (or data.path) on different images of the same shape was silent."""
    import numpy as np

    from aelab.errors import ConfigError
    from aelab.run.job import run_job

    data = tmp_path / "x.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.random((300, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 3, 300))
    args = ["data=arrays", f"data.path={data}", "model=mlp", "model.bottleneck=4", "data.batch_size=32"]
    _, run_dir = run_train(*args, name="d", tiny=False)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["dataset_info"]["content"]
    (run_dir / "metrics.json").write_text(json.dumps({**record, "status": "running"}))  # as if killed at its end
    np.savez(data, x=rng.random((300, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 3, 300))  # other images
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match=r"was trained on other data: .*content \w+ → \w+"):
        run_job(make_cfg(*args, name="d", tiny=False), cli=False)
    assert snapshot(run_dir) == before

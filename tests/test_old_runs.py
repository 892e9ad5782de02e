"""A run folder written by aelab 0.1 (before the package moved into layers) keeps working.

``tests/fixtures/run_0.1`` was trained by the main branch before the reshaping (``126e35c~1``):
``model=linear model.bottleneck=4 data=sprites data.num_train=600 data.num_test=200 data.val_size=100
trainer.max_epochs=1 name=old01``. Its ``.hydra/`` files name the old module paths
(``aelab.checkpoints.AtomicCheckpointIO``, ``aelab.tracking.ResumableCSVLogger``,
``aelab.folders.RunFolderCallback``) and its config lacks keys added since.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "run_0.1"
TRAINED_WITH = [
    "model=linear",
    "model.bottleneck=4",
    "data=sprites",
    "data.num_train=600",
    "data.num_test=200",
    "data.val_size=100",
    "trainer.max_epochs=1",
]


@pytest.fixture
def old_run(tmp_path) -> Path:
    run_dir = tmp_path / "outputs" / "runs" / "old01"
    shutil.copytree(FIXTURE, run_dir)
    return run_dir


def test_the_fixture_names_the_old_paths():
    config = (FIXTURE / ".hydra" / "config.yaml").read_text()
    assert "aelab.checkpoints.AtomicCheckpointIO" in config and "aelab.tracking.ResumableCSVLogger" in config
    assert "aelab.folders.RunFolderCallback" in (FIXTURE / ".hydra" / "hydra.yaml").read_text()


def test_load_run_encodes_and_reconstructs_with_the_recorded_weights(old_run):
    import torch

    import aelab
    from aelab.store.checkpoints import load_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # nothing of the old layout is imported on the way
        run = aelab.load_run(old_run)
    weights = load_checkpoint(next((old_run / "checkpoints").glob("best-*.ckpt")))["state_dict"]
    assert all(torch.equal(run.model.state_dict()[k], v) for k, v in weights.items())
    images = torch.rand(3, 1, 28, 28)
    assert run.encode(images).shape == (3, 4)
    assert run.reconstruct(images).shape == (3, 1, 28, 28)


@pytest.mark.slow  # ~17 s of subprocesses: with the slow checks, so make test keeps its 5 minutes on a slow hour
def test_aelab_eval_and_compare_read_it(old_run, cli, tmp_path):
    evaluated = cli(f"run={old_run}", "eval=[probe]", "eval.probe.num_train=200", tool="aelab-eval")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    record = json.loads((old_run / "metrics.json").read_text())
    assert 0 <= record["eval"]["metrics"]["eval/probe_acc"] <= 1
    assert record["status"] == "completed" and record["bottleneck"] == 4  # what the run recorded stays

    from aelab.api import compare

    compare([old_run], out_dir=tmp_path / "cmp")
    assert (tmp_path / "cmp" / "report.html").is_file()


def test_the_same_command_under_0_2_skips_it_as_completed_instead_of_refusing_a_changed_config(old_run, cli):
    before = {p: p.read_bytes() for p in old_run.rglob("*") if p.is_file()}
    result = cli(*TRAINED_WITH, "name=old01")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "completed earlier with this config" in result.stdout + result.stderr
    after = {p: p.read_bytes() for p in old_run.rglob("*") if p.is_file()}
    log = old_run / "train.log"
    assert after.pop(log).startswith(before.pop(log))  # the log only grows (by the line saying it was skipped)
    after.pop(old_run / ".aelab.lock", None), before.pop(old_run / ".aelab.lock", None)
    assert after == before  # nothing the run recorded is rewritten

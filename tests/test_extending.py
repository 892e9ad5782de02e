"""The three recipes of docs/extending.md, followed from a package outside aelab (tests/extension/mylab).

(The model recipe's finite-loss check, and the refusal of models written to the docs before the training
step moved into the base class, are in tests/test_steps.py.)

A model variant, a dataset and an evaluation, each one module and one yaml, used through
``hydra.searchpath=[pkg://mylab.conf]`` without editing aelab: they train, are checked before any
run folder exists, and land in metrics.json, W&B (offline) and aelab-compare's tables.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import BIN, TINY
from wandb_files import offline_runs, read_offline_run

EXTENSION = Path(__file__).parent / "extension"
SEARCHPATH = "hydra.searchpath=[pkg://mylab.conf]"
QUICK = [o for o in TINY if o.startswith(("trainer.", "callbacks."))]


def run_cli(args: list[str], cwd: Path, tool: str = "aelab-train"):
    import subprocess

    env = dict(os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1", PYTHONPATH=str(EXTENSION))
    env.pop("WANDB_SERVICE", None)
    return subprocess.run([str(BIN / tool), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """One run of all three: the toy model on the toy dataset with the toy evaluation, tracked in W&B offline."""
    root = tmp_path_factory.mktemp("extension")
    result = run_cli(
        [
            SEARCHPATH,
            "model=code_l2",
            "data=stripes",
            "eval=[code_stats,probe]",
            "eval.probe.num_train=500",
            "logger=wandb",
            *QUICK,
            "trainer.max_epochs=2",
            "name=toy",
        ],
        root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root, root / "outputs" / "runs" / "toy"


def test_the_toy_model_dataset_and_evaluation_train_and_land_in_metrics_json(toy_run):
    _, run_dir = toy_run
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["dataset"].startswith("stripes: ")  # the toy dataset's own description
    assert record["final"]["train/code_norm"] > 0  # the toy model's own metric, from its objective
    assert record["final"]["train/recon_loss_epoch"] > 0  # the epoch mean of the base class's training step
    assert record["final"]["eval/code_norm"] > 0 and record["final"]["eval/code_std"] > 0  # the toy evaluation
    assert (
        0 <= record["final"]["eval/probe_acc"] <= 1 and record["final"]["eval/chance_acc"] < 0.6
    )  # a built-in evaluation on it
    info = record["metric_info"]  # declared by their producers, nowhere else
    assert info["train/code_norm"]["label"] == "mean squared code norm" and info["train/code_norm"]["column"]
    assert info["eval/code_std"]["column"]


def test_the_toy_metrics_reach_wandb(toy_run):
    _, run_dir = toy_run
    (folder,) = offline_runs(run_dir)
    run = read_offline_run(folder)
    logged = {k for row in run["history"] for k in row}
    assert "train/code_norm" in logged and "eval/code_norm" in logged
    assert run["summary"]["train/code_norm"] == {
        "last": pytest.approx(json.loads((run_dir / "metrics.json").read_text())["final"]["train/code_norm"])
    }
    assert run["config"]["model"]["_target_"] == "mylab.toy_model.CodeL2Autoencoder"


@pytest.mark.slow  # subprocess-heavy (~20 s): runs with the slow checks, which CI runs (make test < 5 min)
def test_the_toy_metrics_are_columns_of_aelab_compare(toy_run):
    root, run_dir = toy_run
    result = run_cli([str(run_dir), "--out", str(root / "cmp"), "--bookkeeping"], root, tool="aelab-compare")
    assert result.returncode == 0, result.stderr[-2000:]
    header = (root / "cmp" / "comparison.csv").read_text().splitlines()[0]  # the keys (comparison.md: their labels)
    for column in ("test/recon_loss", "train/code_norm", "eval/code_norm", "eval/code_std", "eval/probe_acc", "params"):
        assert column in header, (column, header)
    assert header.index("eval/code_norm") < header.index("params")
    shown = (root / "cmp" / "comparison.md").read_text().splitlines()[0]
    assert "mean code norm" in shown and "mean per-unit std of the codes" in shown  # the toys' own labels


@pytest.mark.parametrize(
    "override, message",
    [
        ("+model.code_wieght=1", "model.code_wieght is not an option of model; did you mean model.code_weight?"),
        ("model.code_weight=-1", "model.code_weight must be >= 0 (got -1)"),
        ("+data.sise=8", "data.sise is not an option of data; did you mean data.size?"),
        ("eval.code_stats.num_images=0", "eval.code_stats.num_images must be a positive integer (got 0)"),
    ],
)
def test_a_bad_key_or_value_of_the_toys_fails_before_any_run_folder(tmp_path, override, message):
    result = run_cli([SEARCHPATH, "model=code_l2", "data=stripes", "eval=[code_stats]", *QUICK, override], tmp_path)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs" / "runs").exists()


def test_a_misspelt_key_in_a_toy_config_file_fails_before_any_run_folder(tmp_path):
    conf = tmp_path / "myconf" / "model"
    conf.mkdir(parents=True)
    (conf / "typo.yaml").write_text(
        "defaults:\n  - mlp\n  - _self_\n\n_target_: mylab.toy_model.CodeL2Autoencoder\ncode_wieght: 0.1\n"
    )
    result = run_cli(
        [f"hydra.searchpath=[file://{tmp_path / 'myconf'}]", "model=typo", "data=sprites", *QUICK], tmp_path
    )
    assert result.returncode != 0
    assert "model.code_wieght is not an option of model; did you mean model.code_weight?" in result.stderr, (
        result.stderr[-2000:]
    )
    assert not (tmp_path / "outputs" / "runs").exists()


def test_the_needs_of_a_task_are_read_from_its_source():
    """A task's needs are read from its source: the check happens before training."""
    from omegaconf import OmegaConf

    from aelab.config.checks import _eval_needs

    cfg = OmegaConf.create(
        {
            "model": {"_target_": "aelab.models.Autoencoder"},
            "data": {"_target_": "aelab.data.ImageDataModule"},
            "eval": {"nll": {"_target_": "aelab.evaluation.likelihood.NLLTask"}},
        }
    )
    assert _eval_needs(cfg) == [
        "eval.nll needs a model with 'iwae' (a VAE); model aelab.models.Autoencoder offers none of these"
    ]
    cfg.model._target_ = "aelab.models.VAE"
    assert _eval_needs(cfg) == []

"""W&B sweeps drive aelab-train: the example sweep files translate into valid aelab overrides, and the
agent's own command line (built by the W&B client, offline) trains a run into the sweep's folder and group."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from conftest import BIN, TINY
from wandb_files import offline_runs, read_offline_run

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "wandb_sweeps").glob("*.yaml"))


def sample(spec: dict):
    """One value a W&B sweep could propose for a parameter spec."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][-1]
    low, high = spec["min"], spec["max"]
    return (low + high) // 2 if spec.get("distribution") == "int_uniform" else round((low + high) / 2, 6)


def agent_command(sweep: dict, args: dict) -> list[str]:
    """The command line ``wandb agent`` runs for one proposal, built by the W&B client's own code."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = {"program": sweep["program"], "args": {k: {"value": v} for k, v in args.items()}}
    variables = sweep_utils.create_sweep_command_args(command)
    variables.update(program=[command["program"]], env=["/usr/bin/env"], interpreter=["python"])
    line = []
    for chunk in sweep_utils.create_sweep_command(list(sweep["command"])):
        chunk = str(chunk)
        line += variables.get(chunk[2:-1], []) if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return line


def overrides_problems(overrides: list[str]) -> list[str]:
    from hydra import compose, initialize_config_dir

    from aelab import config_dir
    from aelab.config.checks import config_problems

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return config_problems(cfg, overrides)[0]


def test_there_is_one_example_per_search_method():
    assert sorted(yaml.safe_load(p.read_text())["method"] for p in EXAMPLES) == ["bayes", "grid", "random"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_sweep_becomes_a_valid_aelab_train_command(path):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["program"] == "aelab-train" and sweep["metric"]["name"] == "best/val/recon_loss"
    proposal = {name: sample(spec) for name, spec in sweep["parameters"].items()}
    line = agent_command(sweep, proposal)
    assert line[:2] == ["/usr/bin/env", "aelab-train"]
    overrides = line[2:]
    for name, value in proposal.items():  # every swept value reaches aelab as a Hydra override
        assert f"{name}={value}" in overrides
    assert overrides_problems(overrides) == []
    # the check is real: a misspelt swept key would be refused before any run folder exists
    (problem,) = overrides_problems(overrides + ["+model.bottelneck=8"])
    assert "bottelneck" in problem


@pytest.mark.slow
def test_a_wandb_agent_trains_a_run_into_the_sweeps_folder_and_group(tmp_path, monkeypatch):
    """``wandb agent``'s own run step (Agent._command_run: run id, sweep config file, macros, subprocess), offline."""
    from wandb import wandb_agent

    sweep = yaml.safe_load((EXAMPLES[[p.stem for p in EXAMPLES].index("grid")]).read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SWEEP_ID", "swp123")
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    agent = wandb_agent.Agent.__new__(wandb_agent.Agent)  # what Agent.run() sets up from the server, without one
    agent._sweep_command, agent._in_jupyter, agent._function = sweep["command"], False, None
    agent._run_processes, agent._forward_signals = {}, False
    args = {"model": "mlp", "model.bottleneck": 4}
    args.update(dict(o.split("=", 1) for o in TINY))
    agent._command_run(
        {"run_id": "run0001", "program": sweep["program"], "args": {k: {"value": v} for k, v in args.items()}}
    )
    process = agent._run_processes["run0001"]._popen
    assert process.wait(timeout=600) == 0
    run_dir = tmp_path / "outputs" / "sweeps" / "wandb-swp123" / "run0001"
    record = yaml.safe_load((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["bottleneck"] == 4 and record["model"] == "mlp"
    assert record["wandb"]["id"] == "run0001"
    (folder,) = offline_runs(run_dir)
    info = read_offline_run(folder)
    assert info["run_id"] == "run0001" and info["group"] == "swp123"
    assert info["summary"]["best/val/recon_loss"] == pytest.approx(record["best"]["val/recon_loss"])

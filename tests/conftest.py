"""Shared fixtures: composing aelab configs in-process, tiny sprites runs, CLI calls."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Parallel test workers share the cores: each worker (and every aelab process it starts) gets
    cores / workers torch threads. Oversubscribed OpenMP threads spin against each other and made
    the suite more than twice as slow."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)


BIN = Path(sys.executable).parent

# Small and quick: sprites, a few hundred images, no progress bar or model summary.
TINY = [
    "data=sprites",
    "data.num_train=800",
    "data.num_test=200",
    "data.val_size=200",
    "data.batch_size=64",
    "data.eval_batch_size=200",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
]


def compose_config(run_dir: Path, overrides: list[str], multirun: bool = False):
    """Compose aelab's config as ``aelab-train`` would, with its run folder at ``run_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from aelab import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.mode = RunMode.MULTIRUN if multirun else RunMode.RUN
        cfg.paths.output_dir = str(run_dir.parent)
    HydraConfig.instance().set_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def train_run_folder(run_dir: Path, overrides: list[str]) -> Path:
    """Train in-process into ``run_dir`` (the job writes its ``.hydra/`` files as under the CLI: a complete run
    folder)."""
    from omegaconf import open_dict

    from aelab.run.job import run_job

    cfg = compose_config(run_dir, overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    run_job(cfg)
    return run_dir


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(*overrides, name="run")`` → a composed config whose run folder is under tmp_path."""

    def factory(*overrides: str, name: str = "run", tiny: bool = True, multirun: bool = False):
        return compose_config(tmp_path / name, (TINY if tiny else []) + list(overrides), multirun=multirun)

    return factory


@pytest.fixture
def run_train(make_cfg):
    """Train in-process through the same path as ``aelab-train``; returns (summary, run_dir)."""
    from aelab.run.job import run_job

    def runner(*overrides: str, name: str = "run", tiny: bool = True):
        cfg = make_cfg(*overrides, name=name, tiny=tiny)
        run_job(cfg)
        from aelab.store.record import RunRecord

        record = RunRecord.read(cfg.paths.run_dir)
        return (record.data if record else None), Path(cfg.paths.run_dir)

    return runner


def run_cli(args: list[str], cwd: Path, timeout: float = 600, tool: str = "aelab-train") -> subprocess.CompletedProcess:
    """Run an aelab console script in ``cwd`` and capture its output."""
    env = dict(os.environ, WANDB_MODE="offline", PYTHONUNBUFFERED="1", COLUMNS="200")
    env.pop("WANDB_SERVICE", None)  # the pytest worker's own W&B service: a CLI run starts its own, like from a shell
    return subprocess.run([str(BIN / tool), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(tmp_path):
    """``cli(*args)`` runs aelab-train in tmp_path (so outputs/ lands there)."""

    def runner(*args: str, tool: str = "aelab-train", timeout: float = 600):
        return run_cli(list(args), tmp_path, timeout=timeout, tool=tool)

    return runner


def fashion_mnist_available() -> bool:
    return Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()


needs_fashion_mnist = pytest.mark.skipif(
    not fashion_mnist_available(), reason="Debian's dataset-fashion-mnist is not installed (CI installs it)"
)

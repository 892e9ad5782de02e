"""The Python API: train, load and compare runs from a notebook or a script, without a command line.

    import aelab
    run = aelab.train(["model=mlp", "model.bottleneck=8", "trainer.max_epochs=3"])   # → a LoadedRun
    run.metrics["final"]["test/recon_loss"], run.encode(images), run.score(images)
    run = aelab.load_run("outputs/runs/<run>")
    aelab.compare(["outputs/sweeps/<sweep>"])

``aelab.train`` composes the config with Hydra's compose API (no ``sys.argv``, no
``@hydra.main``), applies the same checks and run-folder rules as ``aelab-train``,
trains through the same job, and returns the run loaded back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from aelab.errors import ConfigError


def compose_train_config(overrides: Iterable[str] = ()):
    """``conf/config.yaml`` composed with ``overrides``, with Hydra's own config (as ``aelab-train`` would)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from aelab import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def train(overrides: Iterable[str] = (), device: str = "cpu"):
    """Train one run described by Hydra ``overrides`` (as on the command line); returns it loaded (a LoadedRun).

    A bad config raises :class:`aelab.errors.ConfigError` before any run folder exists; a failed run
    raises its error, with ``metrics.json`` and ``error.log`` written as ``aelab-train`` writes them.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from aelab.run.folders import prepare_run_dir
    from aelab.run.job import run_job
    from aelab.run.load import load_run

    overrides = list(overrides)
    if any(o in ("-m", "--multirun") for o in overrides):
        raise ConfigError(
            "aelab.train runs one configuration; run sweeps with aelab-train -m (or call aelab.train per setting)"
        )
    cfg = compose_train_config(overrides)
    try:
        run_dir = prepare_run_dir(cfg)
    except SystemExit as exc:
        raise ConfigError(str(exc).removeprefix("aelab-train: error: ")) from None
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.run.dir = str(run_dir)
        cfg.hydra.mode = RunMode.RUN
    HydraConfig.instance().set_config(cfg)
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    task = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    OmegaConf.save(task, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": cfg.hydra}), hydra_dir / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        run_job(task, cli=False)
    finally:
        root.removeHandler(handler)
        handler.close()
    return load_run(run_dir, device=device)


def load_run(
    path: str | Path,
    which: str = "best",
    device: str = "cpu",
    trust_checkpoint: bool = False,
    trust_packages: Iterable[str] = (),
):
    """A trained run folder loaded back (:class:`aelab.run.load.LoadedRun`): ``.config``, ``.metrics``, ``.model``,
    ``.encode(x)``, ``.reconstruct(x)``, ``.score(x)``, ``.datamodule()``.

    The folder is read as data (``docs/trust.md``): ``trust_checkpoint=True`` loads its checkpoint with full pickle
    (running any code it holds), ``trust_packages`` lets its config name those packages' ``_target_``s."""
    from aelab.run.load import load_run as _load

    return _load(path, which=which, device=device, trust_checkpoint=trust_checkpoint, trust_packages=trust_packages)


def compare(paths=None, **options):
    """Tables and figures over the runs under ``paths``, as ``aelab-compare`` writes them
    (:func:`aelab.analysis.compare.compare`).
    """
    from aelab.analysis.compare import compare as _compare

    return _compare(paths, **options)

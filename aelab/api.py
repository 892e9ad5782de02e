"""The Python API: train, load and compare runs from a notebook or a script, without a command line.

    import aelab
    run = aelab.train(["model=mlp", "model.bottleneck=8", "trainer.max_epochs=3"])   # → a LoadedRun
    run.metrics["final"]["test/recon_loss"], run.encode(images), run.score(images)
    run = aelab.load_run("outputs/runs/<run>")
    aelab.compare(["outputs/sweeps/<sweep>"])

``aelab.train`` runs exactly what ``aelab-train`` runs — Hydra's own run (:meth:`Hydra.run`) of the
same config tree, with the same callback (the pre-run step, the run folder) and the same task (the
job) — only the overrides come from a list instead of ``sys.argv``. It returns the run loaded back.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from aelab.errors import ConfigError


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    return shell is not None and getattr(shell, "get_ipython", lambda: None)() is not None


def train(overrides: Iterable[str] = (), device: str = "cpu", verbose: bool | None = None):
    """Train one run described by Hydra ``overrides`` (as on the command line); returns it loaded (a LoadedRun).

    A bad config raises :class:`aelab.errors.ConfigError` before any run folder exists; a failed run
    raises its error, with ``metrics.json`` and ``error.log`` written as ``aelab-train`` writes them.
    ``verbose`` (default: quiet in a notebook, as the command line elsewhere): ``False`` keeps the log, the
    model table, the progress bar and the end-of-run summary out of the output (they still go to
    ``train.log``); the returned run's ``summary()`` shows the summary.
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    from aelab import config_dir
    from aelab.run.job import run_job
    from aelab.run.load import load_run
    from aelab.run.precheck import Refused

    overrides = list(overrides)
    if any(o in ("-m", "--multirun") for o in overrides):
        raise ConfigError(
            "aelab.train runs one configuration; run sweeps with aelab-train -m (or call aelab.train per setting)"
        )
    quiet = _in_notebook() if verbose is None else not verbose
    if quiet:
        overrides += ["verbose=false", "hydra.job_logging.root.handlers=[file]", "hydra.hydra_logging.root.handlers=[]"]

    def task(cfg):
        return run_job(cfg, cli=False)

    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(
            task_name="train", config_search_path=create_config_search_path(str(config_dir()))
        )
        result = hydra.run(config_name="config", task_function=task, overrides=[*overrides, "hydra.mode=RUN"])
    except Refused as refused:
        raise refused.error from None
    except ConfigCompositionException as exc:  # an unknown key: the CLI's words and "did you mean", as a ConfigError
        from aelab.cli.common import explain_bad_override
        from aelab.run.precheck import config_problems

        GlobalHydra.instance().clear()
        message = explain_bad_override(exc, "config", config_problems, argv=overrides)
        if message is None:
            raise
        raise ConfigError(message) from None
    finally:
        GlobalHydra.instance().clear()
    return load_run(Path(result.hydra_cfg.hydra.runtime.output_dir), device=device)


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

"""``aelab-eval``: measure what autoencoders are used for, on trained run folders.

    aelab-eval run=outputs/runs/<run> eval=[anomaly,probe,denoise,artifacts]
    aelab-eval run=outputs/sweeps/<sweep>                  # every run of the sweep, automatic tasks
    aelab-train data.normal_class=3 eval=[anomaly]        # the same tasks at the end of training

The tasks are the ``eval`` config group (``conf/eval/*.yaml``; see
:mod:`aelab.evaluation.task`): ``anomaly``, ``probe``, ``denoise``,
``artifacts``, ``generation``, ``nll``, ``pca``, and any a user's package adds
through Hydra's search path. With none selected, one-class runs get
``auto_tasks.one_class`` and the others ``auto_tasks.other``. Results go into
the run's ``metrics.json`` (``final`` gets the ``eval/*`` numbers, ``eval`` the
details), PNGs into ``<run>/eval/``, and into the run's W&B run when it has one.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from aelab import config_dir
from aelab.cli.common import entry_main, refuse_bad_options
from aelab.errors import AelabError, find_aelab_error
from aelab.evaluation.runner import evaluate_path
from aelab.run.load import pick_device

log = logging.getLogger("aelab.eval")


def evaluate_main(cfg: DictConfig) -> int:
    """The body of ``aelab-eval``: evaluate, print a summary, return the exit code."""
    from aelab.evaluation.runner import build_tasks
    from aelab.run.session import search_path

    if OmegaConf.is_missing(cfg, "run"):
        print(
            "aelab-eval: error: which run? name it with run=<run folder or sweep folder>, e.g.\n"
            "  aelab-eval run=outputs/runs/<run> eval=[probe]",
            file=sys.stderr,
        )
        return 2
    try:
        device = pick_device(str(cfg.device))
        trust = {"trust_checkpoint": bool(cfg.trust_checkpoint), "trust_packages": list(cfg.trust_packages)}
        tasks = build_tasks(cfg.get("eval"), search_path(), trust["trust_packages"]) or None
        results = evaluate_path(cfg.run, tasks, str(cfg.checkpoint), device, cfg.auto_tasks, **trust)
    except AelabError as exc:
        print(f"aelab-eval: error: {find_aelab_error(exc) or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # instantiate wraps a task's own ConfigError
        err = find_aelab_error(exc)
        if err is None:
            raise
        print(f"aelab-eval: error: {err}", file=sys.stderr)
        return 2
    failures = 0
    for run_dir, result in results.items():
        if isinstance(result, BaseException):
            failures += 1
            err = find_aelab_error(result) or result
            print(f"{run_dir}: error: {err}", file=sys.stderr)
            continue
        shown = ", ".join(f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float) and k.count("/") == 1)
        print(f"{run_dir}: {shown}")
    if len(results) > 1:
        print(f"evaluated {len(results) - failures} of {len(results)} runs")
    return 1 if failures else 0


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    from aelab.errors import TrustError
    from aelab.evaluation.runner import check_tasks
    from aelab.run.session import search_path

    try:  # before the option checks, which would import what the tasks name
        trusted = cfg.get("trust_packages")
        check_tasks(cfg.get("eval"), search_path(), [str(p) for p in trusted] if OmegaConf.is_list(trusted) else [])
    except TrustError as exc:
        raise SystemExit(f"aelab-eval: error: {exc}") from None
    refuse_bad_options("aelab-eval", cfg)
    code = evaluate_main(cfg)
    if code:
        sys.exit(code)


def main() -> None:
    """Console entry point ``aelab-eval``."""
    logging.getLogger("lightning").setLevel(logging.WARNING)
    entry_main(_hydra_main, "aelab-eval", "evaluate")


if __name__ == "__main__":
    main()

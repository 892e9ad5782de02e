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
import traceback
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from aelab import config_dir
from aelab.errors import AelabError, ConfigError, RunFolderError, find_aelab_error
from aelab.record import RunRecord

log = logging.getLogger("aelab.eval")


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device=cuda, but no GPU is visible")
    return name


def auto_task_names(run, auto: dict) -> list[str]:
    """The automatic tasks for a run: ``auto.one_class`` for one-class runs, else ``auto.other``."""
    return list(auto["one_class"] if run.data.normal_class is not None else auto["other"])


def compose_tasks(names: list[str]) -> dict[str, Any]:
    """Compose and build the evaluation tasks ``names`` from the ``eval`` config group (Hydra's search path)."""
    from hydra import compose

    from aelab.build import instantiate_group

    cfg = compose(config_name="evaluate", overrides=[f"eval=[{','.join(names)}]"])
    return instantiate_group(cfg.get("eval"))


def evaluate_run(run, tasks: dict[str, Any]) -> dict[str, Any]:
    """Run ``tasks`` on a loaded run; record the results in its ``metrics.json`` and its W&B run."""
    from aelab.evaluation.task import run_tasks
    from aelab.runs import wandb_run_id
    from aelab.tracking import publish_to_wandb_run

    evaluation = run_tasks(run, tasks)
    record = RunRecord.require(run.run_dir)
    record.add_evaluation(evaluation.metrics, evaluation.details, evaluation.files, str(run.checkpoint), evaluation.infos).save()
    run_id = wandb_run_id(run.run_dir)
    if run_id is not None:
        wandb_cfg = (run.cfg.get("logger") or {}).get("wandb")
        publish_to_wandb_run(run.run_dir, wandb_cfg, run_id, evaluation.metrics, evaluation.images)
    return evaluation.metrics


def evaluate_path(path: str | Path, tasks: dict[str, Any] | None, checkpoint: str = "best", device: str = "cpu",
                  auto: dict | None = None) -> dict[str, Any]:
    """Evaluate every run folder at ``path`` with ``tasks`` (None: the automatic ones); returns ``{run_dir: metrics or error}``."""
    from aelab.runs import find_run_dirs, load_run

    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"{path} does not exist")
    run_dirs = find_run_dirs(path)
    if not run_dirs:
        raise RunFolderError(f"{path} holds no aelab runs (no .hydra/config.yaml): point run= at a run or sweep folder")
    results: dict[str, Any] = {}
    for run_dir in run_dirs:
        record = RunRecord.read(run_dir)
        status = record.live_status() if record else None
        has_weights = any((run_dir / "checkpoints").glob("*.ckpt"))
        if status == "interrupted" and has_weights:  # killed: its checkpoints are still worth evaluating
            log.warning("%s was interrupted (no live process owns it); evaluating the checkpoints it kept", run_dir)
        elif status != "completed":
            results[str(run_dir)] = RunFolderError(f"not evaluated: its status is {status or 'unknown (no metrics.json)'}"
                                                   + (" and it kept no checkpoint" if status == "interrupted" else ""))
            continue
        try:
            run = load_run(run_dir, which=checkpoint, device=device)
            chosen = tasks if tasks else compose_tasks(auto_task_names(run, auto or {"one_class": [], "other": []}))
            results[str(run_dir)] = evaluate_run(run, chosen)
        except AelabError as exc:
            results[str(run_dir)] = exc
        except Exception as exc:  # a broken run must not stop a sweep's evaluation
            log.error("%s: %s", run_dir, "".join(traceback.format_exception(exc)))
            results[str(run_dir)] = exc
    return results


def evaluate_main(cfg: DictConfig) -> int:
    """The body of ``aelab-eval``: evaluate, print a summary, return the exit code."""
    from aelab.build import instantiate_group

    if OmegaConf.is_missing(cfg, "run"):
        print("aelab-eval: error: which run? name it with run=<run folder or sweep folder>, e.g.\n"
              "  aelab-eval run=outputs/runs/<run> eval=[probe]", file=sys.stderr)
        return 2
    try:
        device = pick_device(str(cfg.device))
        tasks = instantiate_group(cfg.get("eval")) or None
        results = evaluate_path(cfg.run, tasks, str(cfg.checkpoint), device, cfg.auto_tasks)
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
    code = evaluate_main(cfg)
    if code:
        sys.exit(code)


def main() -> None:
    """Console entry point ``aelab-eval``."""
    logging.getLogger("lightning").setLevel(logging.WARNING)
    _hydra_main()


if __name__ == "__main__":
    main()

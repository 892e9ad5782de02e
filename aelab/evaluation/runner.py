"""Evaluating trained run folders: the tasks chosen for a run, run on it, recorded in its ``metrics.json`` and W&B run.

:func:`evaluate_path` is what ``aelab-eval`` does for each run folder under a path.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from aelab.errors import AelabError, RunFolderError
from aelab.store.files import refuse_links
from aelab.store.record import RunRecord

log = logging.getLogger("aelab.eval")


def auto_task_names(run, auto: dict) -> list[str]:
    """The automatic tasks for a run: ``auto.one_class`` for one-class runs, else ``auto.other``."""
    return list(auto["one_class"] if run.data.normal_class is not None else auto["other"])


def compose_tasks(names: list[str], search_path: list[str] = (), trusted: list[str] = ()) -> dict[str, Any]:
    """Compose and build the evaluation tasks ``names`` from the ``eval`` config group, with ``search_path``
    (the run's own, so that an extension's tasks are found). Their ``_target_``s pass the allowlist first
    (:func:`build_tasks`): a run's search path is data too."""
    from aelab.run.compose import compose

    cfg = compose("evaluate", [f"eval=[{','.join(names)}]"], search_path)
    return build_tasks(cfg.get("eval"), search_path, trusted)


def build_tasks(group, search_path: list[str] = (), trusted: list[str] = ()) -> dict[str, Any]:
    """Instantiate the evaluation tasks of an ``eval`` group, each ``_target_`` checked by the allowlist first
    (:mod:`aelab.config.trust`: an evaluation task of aelab, of a package on ``search_path``, or of one the user
    trusts: ``trusted`` and ``$AELAB_TRUST_PACKAGES``), each result an :class:`~aelab.evaluation.task.EvalTask`;
    a refusal is one line naming ``eval.<task>._target_``."""
    from aelab.errors import ConfigError
    from aelab.evaluation.task import EvalTask
    from aelab.run.parts import instantiate_group

    if not group:
        return {}
    check_tasks(group, search_path, trusted)
    tasks = instantiate_group(group)
    for name, task in tasks.items():
        if not isinstance(task, EvalTask):
            raise ConfigError(f"eval.{name}._target_ built {type(task).__name__}, not an evaluation task (EvalTask)")
    return tasks


def check_tasks(group, search_path: list[str] = (), trusted: list[str] = ()) -> None:
    """Refuse (:class:`aelab.errors.TrustError`, one line naming ``eval.<task>._target_``) an ``eval`` group naming
    anything but evaluation tasks of aelab, of the search path's packages or of packages the user trusts."""
    from aelab.config.trust import check_config_targets, search_path_packages, trusted_packages

    where = "the evaluation tasks' configs (eval=[...], from aelab's config tree and the search path)"
    check_config_targets(
        {"eval": group or {}}, ("eval",), search_path_packages(search_path), trusted_packages(trusted), where=where
    )


def evaluate_run(run, tasks: dict[str, Any]) -> dict[str, Any]:
    """Run ``tasks`` on a loaded run; record the results in its ``metrics.json`` and its W&B run."""
    from aelab.evaluation.task import run_tasks
    from aelab.store.runs import wandb_run_id
    from aelab.tracking import publish_to_wandb_run

    record = RunRecord.require(run.run_dir)

    def save(evaluation) -> None:  # after every task: a stopped aelab-eval keeps the finished tasks' numbers
        record.add_evaluation(
            evaluation.metrics, evaluation.details, evaluation.files, str(run.checkpoint), evaluation.infos
        ).save()

    evaluation = run_tasks(run, tasks, after_each=save)
    run_id = wandb_run_id(run.run_dir)
    if run_id is not None:
        wandb_cfg = (run.cfg.get("logger") or {}).get("wandb")
        publish_to_wandb_run(run.run_dir, wandb_cfg, run_id, evaluation.metrics, evaluation.images)
    return evaluation.metrics


def evaluate_path(
    path: str | Path,
    tasks: dict[str, Any] | None,
    checkpoint: str = "best",
    device: str = "cpu",
    auto: dict | None = None,
    trust_checkpoint: bool = False,
    trust_packages: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Evaluate every run folder at ``path`` with ``tasks`` (None: the automatic ones); returns ``{run_dir: metrics or
    error}``. ``trust_checkpoint`` and ``trust_packages`` are :func:`aelab.run.load.load_run`'s.
    """
    from aelab.run.load import load_run
    from aelab.store.runs import find_run_dirs

    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"{path} does not exist")
    run_dirs = find_run_dirs(path)
    if not run_dirs:
        raise RunFolderError(f"{path} holds no aelab runs (no .hydra/config.yaml): point run= at a run or sweep folder")
    results: dict[str, Any] = {}
    for run_dir in run_dirs:
        record, problem = RunRecord.read_with_problem(run_dir)
        status = record.live_status() if record else None
        has_weights = any((run_dir / "checkpoints").glob("*.ckpt"))
        if status == "interrupted" and has_weights:  # killed: its checkpoints are still worth evaluating
            log.warning("%s was interrupted (no live process owns it); evaluating the checkpoints it kept", run_dir)
        elif status != "completed":
            why = problem if record is None else f"its status is {status or 'not recorded'}"
            results[str(run_dir)] = RunFolderError(
                f"not evaluated: {why}" + (" and it kept no checkpoint" if status == "interrupted" else "")
            )
            continue
        try:
            refuse_links(run_dir)  # the evaluation writes eval/ and metrics.json there
            trust = {"trust_checkpoint": trust_checkpoint, "trust_packages": trust_packages}
            run = load_run(run_dir, which=checkpoint, device=device, **trust)
            auto_tasks = auto or {"one_class": [], "other": []}
            chosen = tasks if tasks else compose_tasks(auto_task_names(run, auto_tasks), run.search_path, run.trusted)
            if not tasks:  # the automatic set: a task this run cannot serve is left out, not a refusal of the others
                for name, task in list(chosen.items()):
                    why = task.refusal(run)
                    if why:
                        log.info("%s: automatic evaluation %s left out: %s", run_dir.name, name, why)
                        del chosen[name]
            results[str(run_dir)] = evaluate_run(run, chosen)
        except AelabError as exc:
            results[str(run_dir)] = exc
        except Exception as exc:  # noqa: BLE001 — a broken run must not stop a sweep's evaluation
            log.error("%s: %s", run_dir, "".join(traceback.format_exception(exc)))
            results[str(run_dir)] = exc
    return results

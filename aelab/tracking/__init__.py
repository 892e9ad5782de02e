"""Experiment tracking: the loggers of a run, set up, fed and finished in one place; one module per backend.

:mod:`aelab.tracking.wandb` (``wandb_logger``), :mod:`aelab.tracking.mlflow` (``mlflow_logger``) and
:mod:`aelab.tracking.csv` (``ResumableCSVLogger``) are the ``_target_``s of the ``logger`` group (also
under their old names ``aelab.tracking.<name>``, which saved run folders use).
:func:`start_loggers` starts them for a run (W&B summaries from the metric infos, the config as
hyperparameters), :func:`publish_evaluation` sends evaluation results to them (or, after training,
to the run's own W&B run), :func:`finish_loggers` flushes and closes them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger

from aelab.tracking.csv import ResumableCSVLogger
from aelab.tracking.mlflow import ResilientMLFlowLogger, mlflow_logger
from aelab.tracking.wandb import ResilientWandbLogger, finish_wandb, publish_to_wandb_run, start_wandb, wandb_logger

__all__ = [
    "ResilientMLFlowLogger",
    "ResilientWandbLogger",
    "ResumableCSVLogger",
    "finish_loggers",
    "mlflow_logger",
    "publish_evaluation",
    "publish_to_wandb_run",
    "start_loggers",
    "wandb_logger",
]

log = logging.getLogger("aelab.tracking")


def start_loggers(
    loggers: list[Logger], params: dict[str, Any], summaries: dict[str, str]
) -> tuple[list[Logger], dict[str, Any]]:
    """Start every logger of a run (rank 0): W&B first, with ``summaries`` (metric → min/max/last), then the config.

    Returns the loggers that started (W&B that cannot start at all is dropped) and what the run
    record keeps to find the tracked runs again (``{"wandb": {"id"}, "mlflow": {"run_id", ...}}``).
    """
    kept, refs = [], {}
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            if not start_wandb(logger, summaries):
                continue
            refs["wandb"] = {"id": logger.experiment.id}
        logger.log_hyperparams(params)
        if isinstance(logger, ResilientMLFlowLogger) and logger.failed is None:
            refs["mlflow"] = logger.reference
        kept.append(logger)
    return kept, refs


def publish_evaluation(loggers: Iterable[Logger], metrics: dict[str, Any], images: dict[str, Path], step: int) -> None:
    """Send evaluation results to a run's open loggers: numbers as metrics (and W&B summary), PNGs as images."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    for logger in loggers:
        logger.log_metrics(numbers, step=step)
        if (
            isinstance(logger, WandbLogger) and logger._experiment is not None
        ):  # private attribute: WandbLogger has no public handle on its run
            import wandb

            try:
                logger.experiment.summary.update(metrics)
                logger.experiment.log({f"eval_images/{k}": wandb.Image(str(p)) for k, p in images.items()})
            except Exception as exc:  # noqa: BLE001 — the results are in metrics.json already
                log.warning("W&B did not take the evaluation results (%s)", exc)
        elif isinstance(logger, ResilientMLFlowLogger) and images:
            import numpy as np
            from PIL import Image

            for key, path in images.items():
                logger.log_image(f"eval_images/{key}", [np.asarray(Image.open(path).convert("RGB"))], step=step)


def finish_loggers(loggers: Iterable[Logger], summary: dict[str, Any], exit_code: int) -> None:
    """Flush every logger; finish the W&B and MLflow runs (``best/*``, ``eval/*`` and the run facts into their "
    "summaries)."""
    flat = {f"best/{k}": v for k, v in (summary.get("best") or {}).items()}
    flat.update({k: v for k, v in (summary.get("final") or {}).items() if k.startswith("eval/")})
    for key in ("status", "error", "params", "bottleneck", "wall_time_s", "epochs"):
        if key in summary:
            flat[key] = summary[key]
    if summary.get("metric_info"):
        flat["metric_info"] = summary["metric_info"]
    for logger in loggers:
        try:
            logger.save()
        except Exception:  # noqa: BLE001 — a logger that cannot flush must not stop the run's end
            pass
        if isinstance(logger, ResilientMLFlowLogger):
            numbers = {k: v for k, v in flat.items() if k not in ("status", "error", "metric_info")}
            logger.finish(
                {**numbers, "global_step": summary.get("global_step")},
                str(summary.get("status") or ("completed" if exit_code == 0 else "failed")),
            )
    finish_wandb(loggers, flat, exit_code=exit_code)

"""Experiment tracking: the loggers of a run, set up, fed and finished in one place.

``wandb_logger`` is the ``_target_`` of ``logger=wandb``. It runs W&B offline
(files in ``<run>/wandb``, uploaded later with ``wandb sync``) whenever
``WANDB_MODE=offline`` is set or no API key is configured, and falls back to
offline when the W&B service cannot be reached in ``init_timeout`` seconds.
:func:`start_loggers` starts them for a run (W&B summaries from the metric
infos, the config as hyperparameters), :func:`publish_evaluation` sends
evaluation results to them (or, after training, to the run's own W&B run),
:func:`finish_loggers` flushes and closes them.
"""

from __future__ import annotations

import logging
import netrc
import os
import time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")


def has_wandb_credentials() -> bool:
    """Whether an API key is configured (``WANDB_API_KEY`` or a netrc entry for the W&B host)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    for path in (os.environ.get("NETRC"), Path.home() / ".netrc", Path.home() / "_netrc"):
        if path and Path(path).is_file():
            try:
                if netrc.netrc(str(path)).authenticators(host):
                    return True
            except (netrc.NetrcParseError, OSError):
                continue
    return False


def resolve_wandb_mode(mode: str | None) -> str:
    """``mode`` if given, else ``$WANDB_MODE``, else online with credentials and offline without."""
    if mode is None:
        mode = os.environ.get("WANDB_MODE") or None
    if mode in ("dryrun",):
        mode = "offline"
    if mode is None:
        mode = "online" if has_wandb_credentials() else "offline"
    if mode not in WANDB_MODES:
        from aelab.errors import ConfigError

        raise ConfigError(f"logger.wandb.mode={mode!r} is not one of {list(WANDB_MODES)}")
    return mode


def wandb_logger(
    project: str = "aelab",
    save_dir: str = ".",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = "train",
    tags: Iterable[str] | None = None,
    mode: str | None = None,
    log_model: bool = False,
    init_timeout: float = 60,
    **kwargs: Any,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` in the right mode, writing under ``save_dir/wandb``."""
    import wandb

    mode = resolve_wandb_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if mode == "offline":
        log.info("W&B runs offline (no API key or WANDB_MODE=offline); upload later with `wandb sync %s/wandb/offline-run-*`", save_dir)
    settings = wandb.Settings(init_timeout=float(init_timeout), console="off")
    logger = ResilientWandbLogger(
        project=project,
        entity=entity,
        name=name or Path(save_dir).name,
        save_dir=str(save_dir),
        group=group,
        job_type=job_type,
        tags=list(tags or []),
        mode=mode,
        log_model=log_model,
        settings=settings,
        **kwargs,
    )
    if logger._wandb_init.get("anonymous") is None:  # noqa: SLF001 — W&B warns about the unused setting
        logger._wandb_init.pop("anonymous", None)  # noqa: SLF001
    return logger


class ResilientWandbLogger(WandbLogger):
    """A ``WandbLogger`` whose failures never stop training.

    The first exception from W&B (service gone, disk full in ``wandb/``, a
    bug) is logged as a warning and the logger turns itself off; the CSV log
    and ``metrics.json`` carry on.
    """

    failed: str | None = None

    def _guard(self, what: str, call, *args, **kwargs):
        if self.failed is not None:
            return None
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 — tracking must never kill training
            self.failed = f"{type(exc).__name__}: {exc}"
            log.warning("W&B failed in %s (%s); W&B logging is off for the rest of this run, "
                        "the CSV log and metrics.json are unaffected", what, self.failed)
            return None

    def log_metrics(self, *args, **kwargs):
        return self._guard("log_metrics", super().log_metrics, *args, **kwargs)

    def log_hyperparams(self, *args, **kwargs):
        return self._guard("log_hyperparams", super().log_hyperparams, *args, **kwargs)

    def log_image(self, *args, **kwargs):
        return self._guard("log_image", super().log_image, *args, **kwargs)

    def log_table(self, *args, **kwargs):
        return self._guard("log_table", super().log_table, *args, **kwargs)

    def after_save_checkpoint(self, *args, **kwargs):
        return self._guard("after_save_checkpoint", super().after_save_checkpoint, *args, **kwargs)

    def finalize(self, *args, **kwargs):
        return self._guard("finalize", super().finalize, *args, **kwargs)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but continuing an existing ``metrics.csv`` instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        import csv

        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                header = next(csv.reader(fh), [])
            self.metrics_keys = list(header)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to ``metrics.csv`` when a run is resumed (Lightning's would delete it)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def _experiment_waiting_for_id(logger: WandbLogger, attempts: int = 10, pause_s: float = 3.0):
    """``logger.experiment``, retrying while a continued run's id is still held ("in use").

    After a SIGKILL, the dead run's W&B service may hold its run id for a few
    seconds more before it notices its parent is gone.
    """
    for attempt in range(attempts):
        try:
            return logger.experiment
        except Exception as exc:  # noqa: BLE001
            if "in use" not in str(exc) or attempt == attempts - 1:
                raise
            log.info("W&B run id still held by the previous process; retrying in %.0f s", pause_s)
            logger._experiment = None  # noqa: SLF001
            time.sleep(pause_s)
    return logger.experiment


def start_wandb(logger: WandbLogger, summary_metrics: dict[str, str]) -> bool:
    """Start the W&B run now (falling back to offline if the service is unreachable).

    ``summary_metrics`` maps metric names to the summary W&B should keep
    (``min``, ``max``, ``last``), e.g. the best ``val/recon_loss``.
    Returns False when W&B cannot start at all (the run goes on without it).
    """
    try:
        experiment = _experiment_waiting_for_id(logger)
    except Exception as exc:  # no network, service down, bad key: never block the run
        log.warning("W&B could not start online (%s); writing offline instead", exc)
        logger._wandb_init["mode"] = "offline"  # noqa: SLF001 — WandbLogger keeps its init kwargs here
        logger._experiment = None  # noqa: SLF001
        try:
            experiment = logger.experiment
        except Exception as exc2:  # noqa: BLE001
            log.warning("W&B could not start offline either (%s); this run is not tracked in W&B", exc2)
            return False
    try:
        for metric, summary in summary_metrics.items():
            experiment.define_metric(metric, summary=summary, step_metric="trainer/global_step")
    except Exception as exc:  # noqa: BLE001
        log.warning("W&B define_metric failed (%s); dashboards show the last values only", exc)
    return True


def start_loggers(loggers: list[Logger], params: dict[str, Any], summaries: dict[str, str]) -> tuple[list[Logger], str | None]:
    """Start every logger of a run (rank 0): W&B first, with ``summaries`` (metric → min/max/last), then the config.

    Returns the loggers that started (W&B that cannot start at all is dropped) and the W&B run id.
    """
    kept, wandb_id = [], None
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            if not start_wandb(logger, summaries):
                continue
            wandb_id = logger.experiment.id
        logger.log_hyperparams(params)
        kept.append(logger)
    return kept, wandb_id


def publish_evaluation(loggers: Iterable[Logger], metrics: dict[str, Any], images: dict[str, Path], step: int) -> None:
    """Send evaluation results to a run's open loggers: numbers as metrics (and W&B summary), PNGs as W&B images."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    for logger in loggers:
        logger.log_metrics(numbers, step=step)
        if isinstance(logger, WandbLogger) and logger._experiment is not None:  # noqa: SLF001
            import wandb

            try:
                logger.experiment.summary.update(metrics)
                logger.experiment.log({f"eval_images/{k}": wandb.Image(str(p)) for k, p in images.items()})
            except Exception as exc:  # noqa: BLE001 — the results are in metrics.json already
                log.warning("W&B did not take the evaluation results (%s)", exc)


def publish_to_wandb_run(run_dir: Path, wandb_cfg: dict | None, run_id: str, metrics: dict[str, Any], images: dict[str, Path]) -> None:
    """Resume a finished run's W&B run (same id and mode) and add evaluation results to it."""
    import wandb

    wandb_cfg = wandb_cfg or {}
    mode = resolve_wandb_mode(wandb_cfg.get("mode"))
    try:
        wb = wandb.init(id=run_id, resume="allow", project=wandb_cfg.get("project", "aelab"), entity=wandb_cfg.get("entity"),
                        dir=str(run_dir), mode=mode, settings=wandb.Settings(init_timeout=60, console="off"))
    except Exception as exc:  # never lose the results already written to metrics.json
        log.warning("W&B run %s not updated (%s); the results are in metrics.json", run_id, exc)
        return
    wb.summary.update(metrics)
    if images:
        wb.log({f"eval_images/{k}": wandb.Image(str(p)) for k, p in images.items()})
    wb.finish()


def finish_loggers(loggers: Iterable[Logger], summary: dict[str, Any], exit_code: int) -> None:
    """Flush every logger; finish the W&B run (``best/*``, ``eval/*`` and the run facts into its summary)."""
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
        except Exception:  # noqa: BLE001
            pass
    finish_wandb(loggers, flat, exit_code=exit_code)


def finish_wandb(loggers: Iterable[Logger], summary: dict[str, Any] | None = None, exit_code: int = 0) -> None:
    """Write ``summary`` into each W&B run's summary and finish it (the next job gets a new run)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:  # noqa: SLF001
            run = logger._experiment  # noqa: SLF001
            try:
                if summary:
                    run.summary.update({k: v for k, v in summary.items() if v is not None})
                run.finish(exit_code=exit_code)
            except Exception as exc:  # noqa: BLE001 — the run's results are already in metrics.json
                log.warning("W&B could not finish its run cleanly (%s)", exc)
            logger._experiment = None  # noqa: SLF001

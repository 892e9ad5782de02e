"""Weights & Biases: ``wandb_logger`` (the ``_target_`` of ``logger=wandb``), offline without a key or a network.

It runs W&B offline (files in ``<run>/wandb``, uploaded later with ``wandb sync``) whenever
``WANDB_MODE=offline`` is set or no API key is configured, and falls back to offline when the
W&B service cannot be reached in ``init_timeout`` seconds. A finished run's W&B run is resumed
to add evaluation results (:func:`publish_to_wandb_run`).
"""

from __future__ import annotations

import logging
import netrc
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import Logger, WandbLogger

from aelab.tracking.resilient import _Resilient

log = logging.getLogger("aelab.tracking")

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


_wandb_probe: dict[str, str | None] = {}


def wandb_unreachable(timeout: float) -> str | None:
    """Why the W&B server cannot be reached (a TCP connection within ``timeout`` s), or None; asked once per process.

    With an API key but no network, ``wandb.init`` waits for its own timeout (about a minute)
    before giving up; this probe makes that a few seconds, and a sweep's later jobs in the
    same process go offline without asking again or repeating the warning.
    """
    import socket
    from urllib.parse import urlparse

    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    if base not in _wandb_probe:
        url = urlparse(base)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname or "", port), timeout=timeout).close()
            _wandb_probe[base] = None
        except OSError as exc:
            _wandb_probe[base] = f"{type(exc).__name__}: {exc}"
            log.warning(
                "W&B server %s cannot be reached (%s): W&B runs offline in this process; "
                "upload later with `wandb sync <run>/wandb/offline-run-*`",
                base,
                _wandb_probe[base],
            )
    return _wandb_probe[base]


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
    init_timeout: float = 15,
    **kwargs: Any,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` in the right mode, writing under ``save_dir/wandb``."""
    import wandb

    mode = resolve_wandb_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if mode == "online" and wandb_unreachable(min(float(init_timeout), 3.0)):
        mode = "offline"
    elif mode == "offline":
        log.info(
            "W&B runs offline (no API key or WANDB_MODE=offline); upload later with `wandb sync "
            "%s/wandb/offline-run-*`",
            save_dir,
        )
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
    if logger._wandb_init.get("anonymous") is None:  # private: W&B warns about the unused setting
        logger._wandb_init.pop("anonymous", None)  # private attribute: WandbLogger has no public handle on its run
    return logger


class ResilientWandbLogger(_Resilient, WandbLogger):
    """A ``WandbLogger`` whose failures never stop training."""

    service = "W&B"

    def log_image(self, *args, **kwargs):
        return self._guard("log_image", super().log_image, *args, **kwargs)

    def log_table(self, *args, **kwargs):
        return self._guard("log_table", super().log_table, *args, **kwargs)


def _experiment_waiting_for_id(logger: WandbLogger, attempts: int = 10, pause_s: float = 3.0):
    """``logger.experiment``, retrying while a continued run's id is still held ("in use").

    After a SIGKILL, the dead run's W&B service may hold its run id for a few
    seconds more before it notices its parent is gone.
    """
    for attempt in range(attempts):
        try:
            return logger.experiment
        except Exception as exc:  # noqa: BLE001 — W&B raises plain Exceptions; only 'in use' is retried
            if "in use" not in str(exc) or attempt == attempts - 1:
                raise
            log.info("W&B run id still held by the previous process; retrying in %.0f s", pause_s)
            logger._experiment = None  # private attribute: WandbLogger has no public handle on its run
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
    except Exception as exc:  # noqa: BLE001 — no network, service down, bad key: never block the run
        log.warning("W&B could not start online (%s); writing offline instead", exc)
        logger._wandb_init["mode"] = "offline"  # private: WandbLogger keeps its init kwargs here
        logger._experiment = None  # private attribute: WandbLogger has no public handle on its run
        try:
            experiment = logger.experiment
        except Exception as exc2:  # noqa: BLE001 — W&B must never stop a run: it goes on untracked
            log.warning("W&B could not start offline either (%s); this run is not tracked in W&B", exc2)
            return False
    try:
        for metric, summary in summary_metrics.items():
            experiment.define_metric(metric, summary=summary, step_metric="trainer/global_step")
    except Exception as exc:  # noqa: BLE001 — a summary W&B refuses costs only the dashboard's best values
        log.warning("W&B define_metric failed (%s); dashboards show the last values only", exc)
    return True


def publish_to_wandb_run(
    run_dir: Path, wandb_cfg: dict | None, run_id: str, metrics: dict[str, Any], images: dict[str, Path]
) -> None:
    """Resume a finished run's W&B run (same id and mode) and add evaluation results to it."""
    import wandb

    wandb_cfg = wandb_cfg or {}
    mode = resolve_wandb_mode(wandb_cfg.get("mode"))
    try:
        wb = wandb.init(
            id=run_id,
            resume="allow",
            project=wandb_cfg.get("project", "aelab"),
            entity=wandb_cfg.get("entity"),
            dir=str(run_dir),
            mode=mode,
            settings=wandb.Settings(init_timeout=15, console="off"),
        )
    except Exception as exc:  # noqa: BLE001 — never lose the results already written to metrics.json
        log.warning("W&B run %s not updated (%s); the results are in metrics.json", run_id, exc)
        return
    wb.summary.update(metrics)
    if images:
        wb.log({f"eval_images/{k}": wandb.Image(str(p)) for k, p in images.items()})
    wb.finish()


def finish_wandb(loggers: Iterable[Logger], summary: dict[str, Any] | None = None, exit_code: int = 0) -> None:
    """Write ``summary`` into each W&B run's summary and finish it (the next job gets a new run)."""
    for logger in loggers:
        if (
            isinstance(logger, WandbLogger) and logger._experiment is not None
        ):  # private attribute: WandbLogger has no public handle on its run
            run = logger._experiment  # private attribute: WandbLogger has no public handle on its run
            try:
                if summary:
                    run.summary.update({k: v for k, v in summary.items() if v is not None})
                run.finish(exit_code=exit_code)
            except Exception as exc:  # noqa: BLE001 — the run's results are already in metrics.json
                log.warning("W&B could not finish its run cleanly (%s)", exc)
            logger._experiment = None  # private attribute: WandbLogger has no public handle on its run

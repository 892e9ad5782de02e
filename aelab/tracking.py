"""Experiment tracking: the loggers of a run, set up, fed and finished in one place.

``wandb_logger`` is the ``_target_`` of ``logger=wandb``. It runs W&B offline
(files in ``<run>/wandb``, uploaded later with ``wandb sync``) whenever
``WANDB_MODE=offline`` is set or no API key is configured, and falls back to
offline when the W&B service cannot be reached in ``init_timeout`` seconds.
``mlflow_logger`` is the ``_target_`` of ``logger=mlflow``: a local SQLite
store under ``outputs/`` unless a tracking URI is given; a server that does
not answer in ``connect_timeout`` seconds falls back to the local store.
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

from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from aelab.constraints import PositiveFloat
from aelab.errors import ConfigError

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
            log.warning("W&B server %s cannot be reached (%s): W&B runs offline in this process; "
                        "upload later with `wandb sync <run>/wandb/offline-run-*`", base, _wandb_probe[base])
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


class _Resilient:
    """A logger whose failures never stop training (mixed in before a Lightning logger class).

    The first exception from the tracking service (service gone, disk full,
    a bug) is logged as a warning and the logger turns itself off; the CSV
    log and ``metrics.json`` carry on.
    """

    failed: str | None = None
    service = "tracking"

    def _guard(self, what: str, call, *args, **kwargs):
        if self.failed is not None:
            return None
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 — tracking must never kill training
            self.failed = f"{type(exc).__name__}: {exc}"
            log.warning("%s failed in %s (%s); %s logging is off for the rest of this run, "
                        "the CSV log and metrics.json are unaffected", self.service, what, self.failed, self.service)
            return None

    def log_metrics(self, *args, **kwargs):
        return self._guard("log_metrics", super().log_metrics, *args, **kwargs)

    def log_hyperparams(self, *args, **kwargs):
        return self._guard("log_hyperparams", super().log_hyperparams, *args, **kwargs)

    def after_save_checkpoint(self, *args, **kwargs):
        return self._guard("after_save_checkpoint", super().after_save_checkpoint, *args, **kwargs)

    def finalize(self, *args, **kwargs):
        return self._guard("finalize", super().finalize, *args, **kwargs)


class ResilientWandbLogger(_Resilient, WandbLogger):
    """A ``WandbLogger`` whose failures never stop training."""

    service = "W&B"

    def log_image(self, *args, **kwargs):
        return self._guard("log_image", super().log_image, *args, **kwargs)

    def log_table(self, *args, **kwargs):
        return self._guard("log_table", super().log_table, *args, **kwargs)


# ------------------------------------------------------------------ MLflow
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "pruned": "KILLED"}
SQLITE = "sqlite:///"


def check_sqlite_store(path: Path, timeout: float, key: str) -> None:
    """Refuse, with the file named, a store that is not a readable SQLite database or stays locked by another process."""
    import sqlite3

    if not path.exists():
        return
    try:
        con = sqlite3.connect(str(path), timeout=timeout)
        try:
            check = con.execute("PRAGMA quick_check(1)").fetchone()
            if not check or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check says {check[0] if check else 'nothing'}")
            con.execute("BEGIN IMMEDIATE")  # waits up to `timeout` for another writer
            con.rollback()
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise ConfigError(f"{key}: the MLflow store {path} is locked by another process (waited {timeout:g} s); "
                              "wait for it, or give this run its own store with logger.mlflow.local_store=<file.db>") from None
        raise ConfigError(f"{key}: the MLflow store {path} cannot be opened ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{key}: {path} is not a readable MLflow SQLite store ({exc}); move it away (a new store is "
                          "created) or point logger.mlflow.local_store at another file") from None


def unreachable(uri: str, timeout: float) -> str | None:
    """Why an http(s) tracking server does not answer within ``timeout`` seconds (DNS included), or None when it does."""
    import threading
    import urllib.error
    import urllib.request

    outcome: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError as exc:  # it answered: a server asking for credentials is one, a 404 or a proxy's 502 is not
            outcome.append(None if exc.code in (401, 403) else f"HTTP {exc.code} from {uri.rstrip('/')}/health, not an MLflow server")
        except Exception as exc:  # noqa: BLE001 — refused, unknown host, timeout
            outcome.append(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer in {timeout:g} s"


def _store_lock(path: Path | None):
    """An exclusive lock beside a SQLite store while it is created or migrated (parallel sweep jobs start together)."""
    import contextlib
    import fcntl

    if path is None:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def held():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(str(path) + ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    return held()


def mlflow_logger(
    experiment_name: str = "aelab",
    local_store: str = "outputs/mlflow.db",
    tracking_uri: str | None = None,
    save_dir: str = ".",
    run_name: str | None = None,
    tags: Iterable[str] | None = None,
    sweep: str | None = None,
    run_id: str | None = None,
    connect_timeout: PositiveFloat = 5.0,
    log_model: bool = False,
) -> "ResilientMLFlowLogger":
    """Lightning's ``MLFlowLogger`` on a tracking store that is there: a server that answers, else the local SQLite file.

    ``tracking_uri`` (or ``$MLFLOW_TRACKING_URI``): an http(s) server, ``sqlite:///file.db`` or
    a ``file:`` folder; unset, the SQLite store ``local_store`` (artifacts beside it in
    ``mlartifacts/``). ``run_id`` continues an MLflow run (a resumed aelab run); ``sweep``
    tags the run with its sweep's name.
    """
    from mlflow.tracking import MlflowClient

    key = "logger.mlflow"
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri and uri.startswith(("http://", "https://")):
        reason = unreachable(uri, float(connect_timeout))
        if reason is not None:
            log.warning("MLflow server %s is unreachable (%s); logging to the local store %s instead", uri, reason, local_store)
            uri = None
        else:  # a server that goes away later costs a few seconds per call, not minutes of retries
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(10, int(connect_timeout))))
    artifact_location = None
    if not uri:
        store = Path(local_store).expanduser().resolve()
        uri = SQLITE + str(store)
        artifact_location = (store.parent / "mlartifacts").as_uri()
    store_path = Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None
    if store_path is not None:
        check_sqlite_store(store_path, float(connect_timeout), f"{key}.local_store" if artifact_location else f"{key}.tracking_uri")
    with _store_lock(store_path):  # the first job creates the store's tables; the others wait for it
        try:
            client = MlflowClient(uri)
            if client.get_experiment_by_name(experiment_name) is None:
                client.create_experiment(experiment_name, artifact_location=artifact_location)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"{key}: the MLflow store {uri} cannot be used ({type(exc).__name__}: {exc})") from None
        if run_id:
            try:
                client.get_run(run_id)
            except Exception:  # noqa: BLE001 — moved or different store
                log.warning("MLflow run %s is not in %s; this run starts a new MLflow run", run_id, uri)
                run_id = None
    run_tags = {"aelab.run_dir": str(Path(save_dir).resolve())}
    if sweep:
        run_tags["sweep"] = sweep
    if tags:
        run_tags["aelab.tags"] = ",".join(str(t) for t in tags)
    return ResilientMLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name or Path(save_dir).name,
        tracking_uri=uri,
        tags=run_tags,
        run_id=run_id,
        log_model=log_model,
        artifact_location=artifact_location,
    )


def _flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys (as in Hydra overrides), values as text."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flat_params(value, name + "."))
        else:
            out[name] = str(value)[:6000]
    return out


class ResilientMLFlowLogger(_Resilient, MLFlowLogger):
    """Lightning's ``MLFlowLogger``: dotted config params (never re-sent when a run continues), images as
    artifacts, the run's final status and best values at the end; its failures never stop training."""

    service = "MLflow"

    def log_hyperparams(self, params, *args, **kwargs):
        return self._guard("log_hyperparams", self._log_params, dict(params))

    def _log_params(self, params: dict[str, Any]) -> None:
        import json

        from mlflow.entities import Param

        info = params.pop("metric_info", None)
        logged = self.experiment.get_run(self.run_id).data.params  # MLflow params cannot change: a continued run keeps them
        new = [Param(k, v) for k, v in _flat_params(params).items() if k not in logged]
        for i in range(0, len(new), 100):
            self.experiment.log_batch(self.run_id, params=new[i:i + 100])
        if info is not None:
            text = json.dumps(info, separators=(",", ":"))
            if len(text) <= 8000:
                self.experiment.set_tag(self.run_id, "aelab.metric_info", text)

    def log_image(self, key: str, images: list, step: int | None = None, caption: list | None = None) -> None:
        """Each image as an artifact ``images/<key>/step_<step>.png`` (the same signature as ``WandbLogger.log_image``)."""
        def log_all():
            for i, image in enumerate(images):
                name = f"images/{key}/step_{int(step or 0):06d}{f'_{i}' if len(images) > 1 else ''}.png"
                self.experiment.log_image(self.run_id, image, artifact_file=name)

        return self._guard("log_image", log_all)

    def finish(self, summary: dict[str, Any], status: str) -> None:
        """Best values and evaluation results as metrics, the aelab status as a tag, the run terminated accordingly."""
        def finish_run():
            numbers = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if numbers:
                self.log_metrics(numbers, step=int(summary.get("global_step") or 0))
            self.experiment.set_tag(self.run_id, "aelab.status", status)
            self.experiment.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))

        return self._guard("finish", finish_run)

    @property
    def reference(self) -> dict[str, str]:
        """What the run record keeps to find this MLflow run again."""
        return {"run_id": self.run_id, "tracking_uri": self._tracking_uri, "experiment": self._experiment_name}


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

    def drop_rows_from(self, step: int) -> int:
        """Remove the rows logged at ``step`` or later (by a run that went on past its checkpoint and died); returns how many.

        A resumed run trains those steps again, so they would otherwise appear twice.
        """
        import csv
        import io

        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return 0
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows or "step" not in rows[0]:
            return 0
        at = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if not (len(r) > at and r[at] and float(r[at]) >= step)]
        dropped = len(rows) - len(kept)
        if dropped:
            from aelab.files import write_text_atomic

            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(kept)
            write_text_atomic(path, out.getvalue())
            self._experiment = None  # the writer re-reads the trimmed file's header before appending
        return dropped

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


def start_loggers(loggers: list[Logger], params: dict[str, Any], summaries: dict[str, str]) -> tuple[list[Logger], dict[str, Any]]:
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
        if isinstance(logger, WandbLogger) and logger._experiment is not None:  # noqa: SLF001
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


def publish_to_wandb_run(run_dir: Path, wandb_cfg: dict | None, run_id: str, metrics: dict[str, Any], images: dict[str, Path]) -> None:
    """Resume a finished run's W&B run (same id and mode) and add evaluation results to it."""
    import wandb

    wandb_cfg = wandb_cfg or {}
    mode = resolve_wandb_mode(wandb_cfg.get("mode"))
    try:
        wb = wandb.init(id=run_id, resume="allow", project=wandb_cfg.get("project", "aelab"), entity=wandb_cfg.get("entity"),
                        dir=str(run_dir), mode=mode, settings=wandb.Settings(init_timeout=15, console="off"))
    except Exception as exc:  # never lose the results already written to metrics.json
        log.warning("W&B run %s not updated (%s); the results are in metrics.json", run_id, exc)
        return
    wb.summary.update(metrics)
    if images:
        wb.log({f"eval_images/{k}": wandb.Image(str(p)) for k, p in images.items()})
    wb.finish()


def finish_loggers(loggers: Iterable[Logger], summary: dict[str, Any], exit_code: int) -> None:
    """Flush every logger; finish the W&B and MLflow runs (``best/*``, ``eval/*`` and the run facts into their summaries)."""
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
        if isinstance(logger, ResilientMLFlowLogger):
            numbers = {k: v for k, v in flat.items() if k not in ("status", "error", "metric_info")}
            logger.finish({**numbers, "global_step": summary.get("global_step")},
                          str(summary.get("status") or ("completed" if exit_code == 0 else "failed")))
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

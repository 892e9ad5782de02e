"""MLflow: ``mlflow_logger`` (the ``_target_`` of ``logger=mlflow``), a local SQLite store unless a server answers.

A local SQLite store under ``outputs/`` unless a tracking URI is given; a server that does
not answer in ``connect_timeout`` seconds falls back to the local store with a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

from aelab.config.constraints import PositiveFloat
from aelab.errors import ConfigError
from aelab.tracking.resilient import _Resilient

log = logging.getLogger("aelab.tracking")

MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "pruned": "KILLED"}
SQLITE = "sqlite:///"


def check_sqlite_store(path: Path, timeout: float, key: str) -> None:
    """Refuse, with the file named, a store that is not a readable SQLite database or stays locked by another "
    "process."""
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
            raise ConfigError(
                f"{key}: the MLflow store {path} is locked by another process (waited {timeout:g} s); "
                "wait for it, or give this run its own store with logger.mlflow.local_store=<file.db>"
            ) from None
        raise ConfigError(f"{key}: the MLflow store {path} cannot be opened ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise ConfigError(
            f"{key}: {path} is not a readable MLflow SQLite store ({exc}); move it away (a new store is "
            "created) or point logger.mlflow.local_store at another file"
        ) from None


def unreachable(uri: str, timeout: float) -> str | None:
    """Why an http(s) tracking server does not answer within ``timeout`` seconds (DNS included), or None when it "
    "does."""
    import threading
    import urllib.error
    import urllib.request

    outcome: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
            outcome.append(None)
        except (
            urllib.error.HTTPError
        ) as exc:  # it answered: a server asking for credentials is one, a 404 or a proxy's 502 is not
            outcome.append(
                None
                if exc.code in (401, 403)
                else f"HTTP {exc.code} from {uri.rstrip('/')}/health, not an MLflow server"
            )
        except Exception as exc:  # noqa: BLE001 — refused, unknown host, timeout
            outcome.append(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer in {timeout:g} s"


def _store_lock(path: Path | None):
    """An exclusive lock beside a SQLite store while it is created or migrated (parallel sweep jobs start together)."""
    import contextlib

    from aelab.store.locks import locked

    return contextlib.nullcontext() if path is None else locked(Path(str(path) + ".lock"))


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
) -> ResilientMLFlowLogger:
    """Lightning's ``MLFlowLogger`` on a store that is there: a server that answers, else the local SQLite file.

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
            log.warning(
                "MLflow server %s is unreachable (%s); logging to the local store %s instead", uri, reason, local_store
            )
            uri = None
        else:  # a server that goes away later costs a few seconds per call, not minutes of retries
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(10, int(connect_timeout))))
    artifact_location = None
    if not uri:
        store = Path(local_store).expanduser().resolve()
        uri = SQLITE + str(store)
        artifact_location = (store.parent / "mlartifacts").as_uri()
    store_path = Path(uri[len(SQLITE) :]) if uri.startswith(SQLITE) else None
    if store_path is not None:
        check_sqlite_store(
            store_path, float(connect_timeout), f"{key}.local_store" if artifact_location else f"{key}.tracking_uri"
        )
    with _store_lock(store_path):  # the first job creates the store's tables; the others wait for it
        try:
            client = MlflowClient(uri)
            if client.get_experiment_by_name(experiment_name) is None:
                client.create_experiment(experiment_name, artifact_location=artifact_location)
        except Exception as exc:  # noqa: BLE001 — any store failure at start-up is one line naming the store
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
        logged = self.experiment.get_run(
            self.run_id
        ).data.params  # MLflow params cannot change: a continued run keeps them
        new = [Param(k, v) for k, v in _flat_params(params).items() if k not in logged]
        for i in range(0, len(new), 100):
            self.experiment.log_batch(self.run_id, params=new[i : i + 100])
        if info is not None:
            text = json.dumps(info, separators=(",", ":"))
            if len(text) <= 8000:
                self.experiment.set_tag(self.run_id, "aelab.metric_info", text)

    def log_image(self, key: str, images: list, step: int | None = None, caption: list | None = None) -> None:
        """Each image as an artifact ``images/<key>/step_<step>.png`` (the same signature as "
        "``WandbLogger.log_image``)."""

        def log_all():
            for i, image in enumerate(images):
                name = f"images/{key}/step_{int(step or 0):06d}{f'_{i}' if len(images) > 1 else ''}.png"
                self.experiment.log_image(self.run_id, image, artifact_file=name)

        return self._guard("log_image", log_all)

    def finish(self, summary: dict[str, Any], status: str) -> None:
        """Best values and evaluation results as metrics, the aelab status as a tag, the run terminated accordingly."""

        def finish_run():
            numbers = {
                k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            if numbers:
                self.log_metrics(numbers, step=int(summary.get("global_step") or 0))
            self.experiment.set_tag(self.run_id, "aelab.status", status)
            self.experiment.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))

        return self._guard("finish", finish_run)

    @property
    def reference(self) -> dict[str, str]:
        """What the run record keeps to find this MLflow run again."""
        return {"run_id": self.run_id, "tracking_uri": self._tracking_uri, "experiment": self._experiment_name}

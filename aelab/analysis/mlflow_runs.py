"""The same run records as run folders give, read from an MLflow tracking store (local SQLite file or server)."""

from __future__ import annotations

import ast
import json
from typing import Any

import yaml

from aelab.errors import RunFolderError

STATES = {
    "FINISHED": "completed",
    "FAILED": "failed",
    "KILLED": "interrupted",
    "RUNNING": "running",
    "SCHEDULED": "running",
}


def _value(text: str) -> Any:
    """An MLflow param (always text) back as the number, list or string it was."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_mlflow_runs(tracking_uri: str, experiment: str = "aelab", sweep: str | None = None) -> list[dict[str, Any]]:
    """Records for every run of MLflow experiment ``experiment`` (optionally one sweep, by its ``sweep`` tag)."""
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in client.search_experiments())
            raise RunFolderError(
                f"MLflow store {tracking_uri} has no experiment {experiment!r} (it has: {', '.join(names) or 'none'})"
            )
        runs = client.search_runs(
            [found.experiment_id], filter_string=f"tags.sweep = '{sweep}'" if sweep else "", max_results=50000
        )
    except RunFolderError:
        raise
    except Exception as exc:  # noqa: BLE001 — unreachable server, not a store
        raise RunFolderError(f"could not read MLflow runs from {tracking_uri}: {type(exc).__name__}: {exc}") from None
    records = []
    for run in runs:
        params = {k: _value(v) for k, v in run.data.params.items()}
        tags = run.data.tags
        try:
            overrides = ast.literal_eval(run.data.params.get("overrides", "[]"))
        except (ValueError, SyntaxError):
            overrides = []
        record: dict[str, Any] = {
            "run": f"mlflow:{run.info.run_id}",
            "status": tags.get("aelab.status") or STATES.get(run.info.status, run.info.status.lower()),
            "error": None,
            "_config": params,
            "_choices": {
                g: params[f"{g}_name"]
                for g in ("model", "data", "noise", "trainer", "experiment")
                if f"{g}_name" in params
            },
            "_overrides": [str(o).split("=", 1)[0].lstrip("+~") for o in overrides],
            "bottleneck": params.get("bottleneck"),
            "seed": params.get("seed"),
            "_info": json.loads(tags["aelab.metric_info"]) if "aelab.metric_info" in tags else None,
        }
        record.update({k: v for k, v in run.data.metrics.items()})
        records.append(record)
    if not records:
        raise RunFolderError(
            f"MLflow experiment {experiment!r} in {tracking_uri} has no runs"
            + (f" tagged sweep={sweep!r}" if sweep else "")
        )
    return records

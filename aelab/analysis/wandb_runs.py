"""The same run records as run folders give, read from a W&B project through its API."""

from __future__ import annotations

from typing import Any

from aelab.analysis.table import flatten
from aelab.errors import RunFolderError

STATES = {
    "finished": "completed",
    "crashed": "failed",
    "failed": "failed",
    "killed": "interrupted",
    "running": "running",
}


def load_wandb_runs(path: str, group: str | None = None) -> list[dict[str, Any]]:
    """Records for every run of W&B project ``entity/project`` (optionally one group / sweep)."""
    try:
        import wandb

        api = wandb.Api(timeout=30)
        runs = list(api.runs(path, filters={"group": group} if group else None))
    except Exception as exc:  # noqa: BLE001 — no key, no network, unknown project
        raise RunFolderError(f"could not read runs of W&B project {path!r}: {type(exc).__name__}: {exc}") from None
    records = []
    for run in runs:
        config = {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
        flat = flatten(config)
        summary = {k: v for k, v in dict(run.summary).items() if not k.startswith("_")}
        record: dict[str, Any] = {
            "run": f"wandb:{path}/{run.id}",
            "status": STATES.get(run.state, run.state),
            "error": None,
            "_config": flat,
            "_choices": {
                g: config[f"{g}_name"]
                for g in ("model", "data", "noise", "trainer", "experiment")
                if f"{g}_name" in config
            },
            "_overrides": [str(o).split("=", 1)[0].lstrip("+~") for o in config.get("overrides", [])],
            "bottleneck": config.get("bottleneck"),
            "params": summary.get("params", config.get("params")),
            "wall_time_s": summary.get("wall_time_s"),
            "seed": config.get("seed"),
            "_info": summary.get("metric_info") or config.get("metric_info"),
        }
        for key, value in summary.items():
            if isinstance(value, dict):  # define_metric summaries: {"min": ...} / {"last": ...}
                value = next(iter(value.values()), None)
            if isinstance(value, (int, float)):
                record[key] = value
        records.append(record)
    if not records:
        raise RunFolderError(f"W&B project {path!r} has no runs" + (f" in group {group!r}" if group else ""))
    return records

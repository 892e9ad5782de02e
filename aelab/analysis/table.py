"""Run folders → one row per run → one row per setting (mean ± std over seeds).

A *setting* is a combination of the config keys that vary across the runs
(found from the runs' overrides and group choices), with ``seed`` left out:
runs that differ only in their seed are repetitions of one setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from aelab.errors import RunFolderError
from aelab.metric_info import MetricCatalog
from aelab.store.record import RECORD_METRICS, RunRecord
from aelab.store.runs import find_run_dirs, read_run_config, run_choices, run_overrides

# Keys that never identify a setting: bookkeeping, hardware, logging.
IGNORED_PREFIXES = (
    "sweep.",
    "hydra.",
    "hydra/",
    "paths.",
    "logger",
    "callbacks",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.enable_",
    "trainer.default_root_dir",
    "threads",
    "ckpt_path",
    "tags",
    "data.root",
    "data.download",
    "hparams_search",
    "debug",
    "name",
    "resume",
    "compile",
    "nonfinite_loss",
    "data.device",
)
SEED = "seed"


@dataclass
class RunTable:
    """The runs found under some folders, as a DataFrame with setting and metric columns."""

    frame: pd.DataFrame  # one row per run
    setting_keys: list[str]  # varying keys (without seed)
    metrics: list[str]  # metric columns, in display order
    problems: list[dict[str, Any]] = field(default_factory=list)  # runs not completed
    info: MetricCatalog = field(default_factory=MetricCatalog)  # what the metrics mean, as the runs declared it

    @property
    def completed(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == "completed"]


def flatten(value: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """A nested dict as ``{"a.b.c": leaf}``."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = value
    return out


def _override_keys(run_dir: Path) -> list[str]:
    return [item.split("=", 1)[0].lstrip("+~") for item in run_overrides(run_dir)]


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def load_runs(paths: list[str | Path]) -> list[dict[str, Any]]:
    """One record per run folder below ``paths``: config values, choices, metrics and status."""
    records = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise RunFolderError(f"{path} does not exist")
        run_dirs = find_run_dirs(path)
        if not run_dirs:
            raise RunFolderError(
                f"{path} holds no aelab runs (no */.hydra/config.yaml below it): "
                "point aelab-compare at a sweep folder (outputs/sweeps/<sweep>) or at run folders"
            )
        for run_dir in run_dirs:
            try:
                cfg, choices, overrides = read_run_config(run_dir), run_choices(run_dir), _override_keys(run_dir)
            except RunFolderError as exc:  # a damaged run folder is listed as not included, with why
                records.append(
                    {
                        "run": str(run_dir),
                        "status": "unreadable",
                        "error": str(exc),
                        "_config": {},
                        "_choices": {},
                        "_overrides": [],
                        "_info": None,
                    }
                )
                continue
            cfg = OmegaConf.to_container(cfg, resolve=False)
            run_record, problem = RunRecord.read_with_problem(run_dir)
            record = {
                "run": str(run_dir),
                "status": run_record.live_status()
                if run_record
                else "running/no metrics.json"
                if problem.startswith("no ")
                else "unreadable",
                "error": run_record.get("error") if run_record else (None if problem.startswith("no ") else problem),
                "_config": flatten(cfg),
                "_choices": choices,
                "_overrides": overrides,
                "_info": run_record.get("metric_info") if run_record else None,
            }
            if run_record:
                record.update(run_record.flat_metrics())
            records.append(record)
    return records


def varying_keys(records: list[dict[str, Any]]) -> list[str]:
    """Config keys (overridden somewhere, or group choices) whose values differ between runs."""
    records = [r for r in records if r["_config"]] or records  # a damaged run folder's missing config decides nothing
    candidates: dict[str, None] = {}
    for record in records:
        for key in list(record["_choices"]) + record["_overrides"]:
            if not key.startswith(IGNORED_PREFIXES):
                candidates[key] = None
    out = []
    for key in candidates:
        values = {_hashable(r["_choices"].get(key, r["_config"].get(key))) for r in records}
        if len(values) > 1:
            out.append(key)
    return out


def build_table(paths: list[str | Path], metrics: list[str] | None = None) -> RunTable:
    """Load the runs under ``paths`` and work out settings and metric columns."""
    return table_from_records(load_runs(paths), metrics)


def table_from_records(records: list[dict[str, Any]], metrics: list[str] | None = None) -> RunTable:
    """Work out settings and metric columns for run records (from folders or from W&B)."""
    if not records:
        raise RunFolderError("no runs to compare")
    keys = varying_keys(records)
    setting_keys = [k for k in keys if k != SEED]
    rows = []
    for record in records:
        row = {k: v for k, v in record.items() if not k.startswith("_")}
        for key in keys:
            row[key] = _hashable(record["_choices"].get(key, record["_config"].get(key)))
        if SEED not in row or row[SEED] is None:
            row[SEED] = record["_config"].get(SEED)
        rows.append(row)
    frame = pd.DataFrame(rows)
    _check_compatible(records, frame)
    info = MetricCatalog()
    for record in records:
        info.add(MetricCatalog.from_json(record.get("_info")))
    info.add(RECORD_METRICS)
    if metrics is None:  # the default columns the runs' producers declared, in their order; the record's facts last
        trailing = [m.key for m in RECORD_METRICS]
        columns = [c for c in info.columns() if c not in trailing]
        # runs recorded without metric infos (older aelab, hand-made records): their test and headline eval numbers
        columns += sorted(
            c for c in frame.columns if c not in info and c.startswith(("test/", "eval/")) and c.count("/") == 1
        )
        metrics = [c for c in columns + trailing if c in frame.columns and pd.api.types.is_numeric_dtype(frame[c])]
    else:
        missing = [m for m in metrics if m not in frame.columns]
        if missing:
            known = sorted(c for c in frame.columns if "/" in c)
            raise RunFolderError(f"no run has the metric(s) {missing}; known metrics: {known}")
    problems = [
        {"run": r["run"], "status": r["status"], "error": r.get("error")} for r in rows if r["status"] != "completed"
    ]
    return RunTable(frame=frame, setting_keys=setting_keys, metrics=metrics, problems=problems, info=info)


def _check_compatible(records: list[dict[str, Any]], frame: pd.DataFrame) -> None:
    losses = {r["_config"].get("model.loss") or r["_config"].get("model.likelihood") for r in records}
    losses.discard(None)
    if {"mse", "bce"} <= losses:
        raise RunFolderError(
            "mixed incompatible runs: model.loss is mse in some runs and bce in others, so their recon_loss "
            "columns measure different things. Compare each group separately (or compare val/mse, "
            "which every run logs when its loss is not mse)."
        )


def aggregate(table: RunTable) -> pd.DataFrame:
    """Mean, std and count of every metric per setting, over the completed runs (seeds)."""
    done = table.completed
    if done.empty:
        return pd.DataFrame()
    keys = table.setting_keys
    numeric = [m for m in table.metrics if m in done.columns]
    # a gap's 95 % interval rides along with the gap (for the plots), shown as a column only when asked for
    numeric += [
        f"{m}_ci95"
        for m in numeric
        if m.startswith("gap/") and f"{m}_ci95" in done.columns and f"{m}_ci95" not in numeric
    ]
    values = done[keys + numeric].copy()
    for m in numeric:
        values[m] = pd.to_numeric(values[m], errors="coerce")
    if keys:
        grouped = values.groupby(keys, dropna=False, sort=True)
        mean, std, count = grouped[numeric].mean(), grouped[numeric].std(ddof=1), grouped[numeric].count()
    else:
        mean = values[numeric].mean().to_frame().T
        std = values[numeric].std(ddof=1).to_frame().T
        count = values[numeric].count().to_frame().T
    out = pd.DataFrame(index=mean.index)
    for m in numeric:
        out[f"{m}"] = mean[m]
        out[f"{m} std"] = std[m]
        out[f"{m} n"] = count[m]
    out = out.reset_index() if keys else out
    if "model.bottleneck" in keys:  # variants together, bottleneck ascending
        others = [k for k in keys if k != "model.bottleneck"]
        out["_order"] = pd.to_numeric(out["model.bottleneck"], errors="coerce")
        out = out.sort_values(others + ["_order"], key=lambda s: s if s.name == "_order" else s.astype(str)).drop(
            columns="_order"
        )
    return out.reset_index(drop=True)


def with_group_means(summary: pd.DataFrame, table: RunTable, key: str = "data.normal_class") -> pd.DataFrame:
    """Add a ``mean`` row per variant over the values of ``key`` (e.g. the mean AUROC over normal classes).

    The mean row averages the per-class means; its std is the std across classes.
    """
    if summary.empty or key not in table.setting_keys:
        return summary
    others = [k for k in table.setting_keys if k != key]
    metrics = [m for m in table.metrics if m in summary.columns]
    groups = summary.groupby(others, dropna=False, sort=True) if others else [((), summary)]
    rows = []
    for name, group in groups:
        name = name if isinstance(name, tuple) else (name,)
        row: dict[str, Any] = dict(zip(others, name))
        row[key] = "mean"
        for m in metrics:
            row[m] = group[m].mean()
            row[f"{m} std"] = group[m].std(ddof=1)
            row[f"{m} n"] = int(group[m].notna().sum())
        rows.append(row)
    out = summary.copy()
    out[key] = out[key].astype(object)
    return pd.concat([out, pd.DataFrame(rows)], ignore_index=True)


def format_value(mean: float, std: float, n: int) -> str:
    """``mean ± std`` with sensible precision (just the mean for one run)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"

    def fmt(v: float) -> str:
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:.2f}"
        if a >= 0.01:
            return f"{v:.4f}"
        return f"{v:.3g}"

    if n is None or n < 2 or std is None or (isinstance(std, float) and math.isnan(std)):
        return fmt(mean)
    return f"{fmt(mean)} ± {fmt(std)}"


def markdown_table(summary: pd.DataFrame, table: RunTable) -> str:
    """The per-setting table as Markdown: setting columns, then ``mean ± std`` per metric, then n."""
    if summary.empty:
        return "_no completed runs_\n"
    keys = table.setting_keys
    metrics = [m for m in table.metrics if m in summary.columns]
    header = keys + metrics + ["runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in summary.to_dict("records"):  # records keep each column's type (iterrows would make ints floats)
        cells = [str(row[k]) for k in keys]
        cells += [format_value(row[m], row[f"{m} std"], row[f"{m} n"]) for m in metrics]
        n = max(int(row[f"{m} n"]) for m in metrics) if metrics else 0
        cells.append(str(n))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

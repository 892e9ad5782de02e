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
    explicit: bool = False  # the metric columns were named by the user (``--metrics``), not the runs' defaults
    echoes: dict[str, str] = field(default_factory=dict)  # varying keys that follow a setting key one-to-one

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
            record["split_seed"] = run_split(record["_config"], run_record)
            if run_record:
                record.update(run_record.flat_metrics())
                if record["status"] == "completed":
                    record.update(end_columns(run_record.convergence(), run_record.get("stopped_early")))
            records.append(record)
    return records


#: a run whose held-out split followed its seed (recorded before ``data.split_seed``, or ``split_seed=${seed}``)
SPLIT_FOLLOWS_SEED = "seed"


def run_split(config: dict[str, Any], record: Any) -> Any:
    """Which train/validation split a run used: its ``data.split_seed`` (the number it resolved to), or
    :data:`SPLIT_FOLLOWS_SEED` when the split was drawn from the run's seed."""
    from aelab.store.fingerprint import FOLLOWS_SEED

    written = config.get("data.split_seed", SPLIT_FOLLOWS_SEED)
    if written in (SPLIT_FOLLOWS_SEED, FOLLOWS_SEED):
        return SPLIT_FOLLOWS_SEED
    info = (record.get("dataset_info") if record else None) or {}
    return info.get("split_seed", written)


def split_text(table: RunTable) -> str:
    """What the spread over seeds covers, from the runs' splits (empty when no setting has two seeds)."""
    done = table.completed
    if "split_seed" not in done.columns or done.empty:
        return ""
    keys = table.setting_keys
    sizes = done.groupby(keys, dropna=False).size() if keys else pd.Series([len(done)])
    if sizes.max() < 2:
        return ""
    splits = {str(v) for v in done["split_seed"].dropna()}
    if splits == {SPLIT_FOLLOWS_SEED}:
        return "each seed drew its own train/validation split: the spread over seeds includes the split's"
    if len(splits) == 1:
        return (
            f"the seeds share one train/validation split (data.split_seed={splits.pop()}): their spread is "
            "initialisation, batch order and corruption"
        )
    return f"the runs' train/validation splits differ (data.split_seed: {', '.join(sorted(splits))})"


#: the per-run columns that say how a run ended (:mod:`aelab.convergence`): still improving, its rate, the verdict
END_COLUMNS = ("still_improving", "improvement_pct_per_epoch", "at_end", "stopped_early_epoch")


def end_columns(verdict: dict[str, Any] | None, stopped: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run's :data:`END_COLUMNS` from its convergence verdict and early stop (None: not known)."""
    if not verdict:
        return {"stopped_early_epoch": (stopped or {}).get("epoch")}
    return {
        "still_improving": bool(verdict.get("still_improving")),
        "improvement_pct_per_epoch": verdict.get("rate_pct_per_epoch"),
        "at_end": verdict.get("verdict"),
        "stopped_early_epoch": (stopped or {}).get("epoch"),
    }


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


def echoes(keys: list[str], records: list[dict[str, Any]]) -> dict[str, str]:
    """The keys whose values pair one-to-one with an earlier key's, and that key: they name the same setting twice
    (``model=conv`` brings ``model/net=conv``). Tables and figures leave them out; runs.csv keeps them."""

    def values(key: str) -> list[Any]:
        return [_hashable(r["_choices"].get(key, r["_config"].get(key))) for r in records]

    kept: list[str] = []
    out: dict[str, str] = {}
    for key in keys:
        mine = values(key)
        same = [k for k in kept if len(set(zip(mine, values(k)))) == len(set(mine)) == len(set(values(k)))]
        if same:
            out[key] = same[0]
        else:
            kept.append(key)
    return out


def build_table(paths: list[str | Path], metrics: list[str] | None = None) -> RunTable:
    """Load the runs under ``paths`` and work out settings and metric columns."""
    return table_from_records(load_runs(paths), metrics)


def table_from_records(records: list[dict[str, Any]], metrics: list[str] | None = None) -> RunTable:
    """Work out settings and metric columns for run records (from folders or from W&B)."""
    if not records:
        raise RunFolderError("no runs to compare")
    keys = varying_keys(records)
    echoed = echoes([k for k in keys if k != SEED], records)
    setting_keys = [k for k in keys if k != SEED and k not in echoed]
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
    explicit = metrics is not None
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
    return RunTable(
        frame=frame,
        setting_keys=setting_keys,
        metrics=metrics,
        problems=problems,
        info=info,
        explicit=explicit,
        echoes=echoed,
    )


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
    for name, column in _end_summary(done, keys).items():
        out[name] = column
    out = out.reset_index() if keys else out
    if keys:  # values in numeric order (2, 4, 16; 0.5, 4, 16); variants together, the bottleneck ascending within
        from aelab.analysis.style import order_key

        order = [k for k in keys if k != "model.bottleneck"] + [k for k in keys if k == "model.bottleneck"]
        rows = sorted(range(len(out)), key=lambda i: tuple(order_key(out[k].iloc[i]) for k in order))
        out = out.iloc[rows]
    return out.reset_index(drop=True)


def _end_summary(done: pd.DataFrame, keys: list[str]) -> dict[str, pd.Series]:
    """Per setting: runs with a convergence verdict, how many of them were still improving, the largest rate."""
    if "still_improving" not in done.columns or done["still_improving"].isna().all():
        return {}
    frame = done[keys].copy() if keys else pd.DataFrame(index=done.index)
    known = done["still_improving"].notna()
    frame["_known"] = known.astype(int)
    frame["_improving"] = (done["still_improving"] == True).astype(int)  # noqa: E712 — a column of True/False/None
    rate = pd.to_numeric(done["improvement_pct_per_epoch"], errors="coerce")
    frame["_rate"] = rate.where(frame["_improving"] == 1)
    if keys:
        grouped = frame.groupby(keys, dropna=False, sort=True)
        sums, largest = grouped[["_known", "_improving"]].sum(), grouped["_rate"].max()
    else:
        sums, largest = frame[["_known", "_improving"]].sum().to_frame().T, frame[["_rate"]].max().to_frame().T["_rate"]
    return {
        "runs assessed": sums["_known"],
        "still improving": sums["_improving"],
        "largest improvement (% per epoch)": largest,
    }


def end_text(row: dict[str, Any]) -> str:
    """A setting's "at the end" cell: ``still improving: 2 of 2 (up to 9.1 % per epoch)``, ``settled``, or ``""``."""
    known = _finite(row.get("runs assessed"))
    if not known:
        return ""
    improving = int(_finite(row.get("still improving")) or 0)
    if not improving:
        return "settled"
    rate = _finite(row.get("largest improvement (% per epoch)"))
    return f"still improving: {improving} of {int(known)}" + (f" (up to {rate:.1f} % per epoch)" if rate else "")


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


#: the record's facts (parameters, wall time): shown in tables and figures only on request
BOOKKEEPING = tuple(m.key for m in RECORD_METRICS)


def shown_metrics(table: RunTable, bookkeeping: bool = False) -> list[str]:
    """The metric columns a table shows: the study's metrics; the bookkeeping ones only when asked for
    (``bookkeeping``) or named explicitly (``--metrics``)."""
    if bookkeeping or table.explicit:
        return list(table.metrics)
    return [m for m in table.metrics if m not in BOOKKEEPING]


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def column_decimals(means: list[Any], spreads: list[Any]) -> int:
    """Decimal places for one column, chosen from its spread.

    With a spread (std over seeds): the column's typical (median) spread keeps one significant figure — two
    when that figure is a 1 (0.0014 → 0.0014, not 0.001) — and the means are rounded to the same place
    (``0.0232 ± 0.0004``). Without one (single runs): three significant figures of the column's largest value,
    more when the differences between its rows need them (ratios 1.002 … 1.038, not 1.00 … 1.04).
    Whole numbers keep no decimals.
    """
    positive = sorted(s for s in (_finite(v) for v in spreads) if s is not None and s > 0)
    values = [m for m in (_finite(v) for v in means) if m is not None]
    if positive:
        typical = positive[(len(positive) - 1) // 2]  # the lower median: few cells lose their spread to "<"
        mantissa, exponent = f"{typical:.1e}".split("e")  # rounded to its first figure: 0.0999 → 1.0e-01
        places = -int(exponent) + (mantissa[0] == "1")  # 0.0014: two figures (one would halve or double it)
    elif values and any(v != 0 for v in values):
        if all(float(v).is_integer() for v in values):
            return 0
        places = -int(f"{max(abs(v) for v in values):.2e}".split("e")[1]) + 2
        spread = max(values) - min(values)  # and the differences between the settings keep two figures
        if spread > 0:
            places = max(places, -int(f"{spread:.1e}".split("e")[1]) + 1)
    else:
        return 0
    return min(max(places, 0), 12)


def _number(value: float, places: int) -> str:
    text = f"{value:,.{places}f}" if abs(value) >= 1000 else f"{value:.{places}f}"
    if text.lstrip("-").strip("0.,") == "":  # rounds to zero: no sign (0.0000, not -0.0000)
        return "0" if places == 0 else text.lstrip("-")
    return text


def format_cell(mean: Any, std: Any, n: Any, places: int) -> str:
    """``mean ± std`` at ``places`` decimals (just the mean for one run or no spread; ``–`` for no value)."""
    mean = _finite(mean)
    if mean is None:
        return "–"
    std = _finite(std)
    if n is None or _finite(n) is None or int(n) < 2 or std is None:
        return _number(mean, places)
    if std == 0:  # seeds that agree say so (a count or a parameter total that cannot vary: no "± 0")
        return _number(mean, places) if mean.is_integer() and places == 0 else f"{_number(mean, places)} ± 0"
    if round(std, places) == 0:
        return f"{_number(mean, places)} ± <{10**-places:.{places}f}"
    return f"{_number(mean, places)} ± {_number(std, places)}"


@dataclass
class FormattedTable:
    """The per-setting table as text: header, cells, the raw value behind each cell (for sorting) and n."""

    header: list[str]
    metrics: list[str]
    rows: list[list[str]]
    raw: list[list[Any]]
    labels: list[str] = field(default_factory=list)  # the header as a reader sees it (metric labels, not keys)


def format_table(summary: pd.DataFrame, table: RunTable, bookkeeping: bool = False) -> FormattedTable:
    """Setting columns, then ``mean ± std`` per metric (decimals per column from its spread), then n.

    A cell whose n differs from its row's n says so (``0.91 (n = 1)``).
    """
    from aelab.analysis.style import value_text

    keys = table.setting_keys
    metrics = [m for m in shown_metrics(table, bookkeeping) if m in summary.columns]
    records = summary.to_dict("records")  # records keep each column's type (iterrows would make ints floats)
    places = {
        m: column_decimals(
            [r[m] for r in records], [r[f"{m} std"] for r in records if (_finite(r.get(f"{m} n")) or 0) > 1]
        )
        for m in metrics
    }
    rows, raw = [], []
    ends = any(end_text(row) for row in records)  # the convergence column, when the runs were assessed
    for row in records:
        counts = [int(row[f"{m} n"]) for m in metrics if _finite(row.get(f"{m} n")) is not None]
        n = max(counts, default=0)
        cells = [value_text(row[k]) for k in keys]
        for m in metrics:
            cell = format_cell(row[m], row[f"{m} std"], row[f"{m} n"], places[m])
            count = _finite(row.get(f"{m} n"))
            if cell != "–" and count is not None and int(count) != n:
                cell += f" (n = {int(count)})"
            cells.append(cell)
        end = [end_text(row)] if ends else []
        rows.append(cells + end + [str(n)])
        raw.append([row[k] for k in keys] + [_finite(row[m]) for m in metrics] + end + [n])
    header = keys + metrics + (["at the end"] if ends else []) + ["n"]
    from aelab.analysis.style import key_label

    labels = [key_label(k) for k in keys] + [table.info.label(m) for m in metrics] + header[len(keys) + len(metrics) :]
    return FormattedTable(header, metrics, rows, raw, labels)


def markdown_table(summary: pd.DataFrame, table: RunTable, bookkeeping: bool = False, formatted=None) -> str:
    """The per-setting table as Markdown (see :func:`format_table`; ``formatted``: its result, when made already)."""
    if summary.empty:
        return "_no completed runs_\n"
    formatted = formatted or format_table(summary, table, bookkeeping)
    header = formatted.labels or formatted.header
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in formatted.rows]
    return "\n".join(lines) + "\n"

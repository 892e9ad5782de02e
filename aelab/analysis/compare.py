"""``aelab-compare``: tabulate and plot sweeps — one row per setting, mean ± std over seeds.

    aelab-compare outputs/sweeps/<sweep>                 # → <sweep>/comparison/
    aelab-compare outputs/sweeps/a outputs/sweeps/b --out outputs/comparisons/ab
    aelab-compare --wandb my-team/aelab --group <sweep>   # the same from W&B (needs network)
    aelab-compare --mlflow sqlite:///outputs/mlflow.db --experiment aelab --group <sweep>   # from MLflow

Writes ``comparison.csv`` (per setting: mean, std, n of each metric, every digit),
``runs.csv`` (one row per run), ``comparison.md`` (the table, rounded by each
column's spread), figures as PNG and PDF in the house style
(:mod:`aelab.analysis.style`: ``overview`` with every metric of the study
against the swept key, one figure per metric, the learning curves, a
reconstruction grid with one row per setting on the same test images),
``report.md`` and ``report.html`` — one self-contained page with all of it
(:mod:`aelab.analysis.report`). Works on sweeps that are still running or have
failed jobs: those runs are listed, not averaged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from aelab.analysis.findings import findings, findings_markdown
from aelab.analysis.plots import curves_figure, denoise_figure, metric_figures, panels, variant_keys, x_key
from aelab.analysis.report import study_commands, write_html_report
from aelab.analysis.style import key_label, order_key, value_text
from aelab.analysis.table import (
    RunTable,
    aggregate,
    build_table,
    format_table,
    markdown_table,
    split_text,
    table_from_records,
    with_group_means,
)
from aelab.convergence import RULE_TEXT as CONVERGENCE_RULE
from aelab.errors import AelabError, RunFolderError
from aelab.store.files import atomic_path, write_text_atomic

log = logging.getLogger("aelab.compare")
TRACKED = ("wandb:", "mlflow:")  # runs read from a tracking service: no local files for curves and grids


@dataclass
class Comparison:
    """What ``compare`` produced: the tables and the files written."""

    table: RunTable
    summary: pd.DataFrame
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)


def _default_out(paths: list[Path]) -> Path:
    if len(paths) == 1:
        out = paths[0] / "comparison"
        if out.is_symlink() or out.is_dir():  # a shared sweep folder's link would carry the tables anywhere
            from aelab.store.files import refuse_links

            refuse_links(out)
        return out
    return Path("outputs") / "comparisons" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def _not_started(paths: list[Path]) -> list[dict[str, Any]]:
    """The jobs of a stopped grid sweep that never started (they have no folder to find)."""
    from aelab.run.sweeps import never_started_jobs

    out = []
    for path in paths:
        for name in never_started_jobs(Path(path)):
            out.append(
                {
                    "run": str(Path(path) / name),
                    "status": "not started",
                    "error": "the sweep stopped before this job began",
                }
            )
    return out


def _grids(table: RunTable, out_dir: Path, num_images: int) -> tuple[dict[str, Path], list[str]]:
    """One reconstruction grid per variant: rows = bottleneck sizes (first seed), same test images."""
    from aelab.analysis.recon_grid import reconstruction_figure

    done = table.completed
    notes: list[str] = []
    if done.empty or done["run"].str.startswith(TRACKED).any():
        return {}, notes
    if "data" in table.setting_keys:
        notes.append("reconstruction grids skipped: the runs use different datasets")
        return {}, notes
    x = x_key(table)
    keys = variant_keys(table, x)
    files: dict[str, Path] = {}
    groups = done.groupby(keys, dropna=False, sort=False) if keys else [((), done)]
    groups = sorted(groups, key=lambda item: tuple(order_key(v) for v in (item[0] if keys else ())))
    for i, (name, group) in enumerate(groups):
        group = group.sort_values("seed").groupby(x, sort=False).head(1) if x else group.head(8)
        if x:
            group = group.iloc[sorted(range(len(group)), key=lambda j: order_key(group[x].iloc[j]))]
        runs = [Path(r) for r in group["run"]]
        labels = [
            f"{key_label(x)} {value_text(row[x])}" if x else Path(row["run"]).name for row in group.to_dict("records")
        ]
        name = name if isinstance(name, tuple) else (name,)
        title = ", ".join(f"{key_label(k)}: {value_text(v)}" for k, v in zip(keys, name)) if keys else ""
        suffix = f"_{i}" if keys else ""
        seeds = group["seed"].dropna()
        note = f"the same {num_images} test images in every row" + (
            f"; each row: the run with seed {value_text(seeds.iloc[0])} of its setting"
            if len(seeds) and table.completed["seed"].nunique() > 1
            else ""
        )
        try:
            files[f"recon_grid{suffix}"] = reconstruction_figure(
                runs, labels, out_dir / f"recon_grid{suffix}.png", num_images, title, note
            )
        except AelabError as exc:
            notes.append(f"reconstruction grid for {title or 'the runs'} skipped: {exc}")
        except Exception as exc:  # noqa: BLE001 — a figure must never cost the user the table
            log.warning("reconstruction grid for %s failed: %s", title or "the runs", exc)
            notes.append(f"reconstruction grid for {title or 'the runs'} skipped: {type(exc).__name__}: {exc}")
    return files, notes


def compare(
    paths: list[str | Path] | None = None,
    out_dir: str | Path | None = None,
    metrics: list[str] | None = None,
    curves: int = 12,
    grid_images: int = 10,
    wandb_path: str | None = None,
    wandb_group: str | None = None,
    mlflow_uri: str | None = None,
    mlflow_experiment: str = "aelab",
    bookkeeping: bool = False,
    references: dict[str, tuple[float, str]] | None = None,
    command: str | None = None,
) -> Comparison:
    """Compare the runs under ``paths`` (or a W&B project, or an MLflow experiment): tables, plots and a report.

    ``wandb_group`` also selects one sweep of an MLflow experiment (its ``sweep`` tag). ``curves``: settings
    whose learning curves are drawn; ``bookkeeping``: parameters and wall time in the table and figures too;
    ``references``: published numbers drawn on a metric's axes (``{"test/nll_iwae": (235.0, "reported")}``);
    ``command``: how this comparison was asked for (shown in ``report.html``).
    """
    if mlflow_uri:
        from aelab.analysis.mlflow_runs import load_mlflow_runs

        table = table_from_records(load_mlflow_runs(mlflow_uri, mlflow_experiment, wandb_group), metrics)
        sources = [
            f"MLflow {mlflow_uri}, experiment {mlflow_experiment}" + (f", sweep {wandb_group}" if wandb_group else "")
        ]
        out = (
            Path(out_dir)
            if out_dir
            else Path("outputs")
            / "comparisons"
            / (f"mlflow_{mlflow_experiment}" + (f"_{wandb_group}" if wandb_group else ""))
        )
    elif wandb_path:
        from aelab.analysis.wandb_runs import load_wandb_runs

        table = table_from_records(load_wandb_runs(wandb_path, wandb_group), metrics)
        sources = [f"W&B project {wandb_path}" + (f", group {wandb_group}" if wandb_group else "")]
        out = Path(out_dir) if out_dir else Path("outputs") / "comparisons" / wandb_path.replace("/", "_")
    else:
        if not paths:
            raise RunFolderError("give one or more sweep or run folders (or --wandb entity/project)")
        paths = [Path(p) for p in paths]
        table = build_table(paths, metrics)
        table.problems += _not_started(paths)
        sources = [str(p) for p in paths]
        out = Path(out_dir) if out_dir else _default_out(paths)
    if command is None:
        command = f"aelab.compare({[str(p) for p in paths or []]!r})"
    out.mkdir(parents=True, exist_ok=True)
    summary = aggregate(table)
    files: dict[str, Path] = {}
    with atomic_path(out / "runs.csv") as tmp:
        table.frame.drop(columns=[c for c in table.frame.columns if c.startswith("_")], errors="ignore").to_csv(
            tmp, index=False
        )
    tabulated = with_group_means(summary, table)  # one-class sweeps: a mean row over the normal classes
    with atomic_path(out / "comparison.csv") as tmp:
        tabulated.to_csv(tmp, index=False)
    files["runs.csv"], files["comparison.csv"] = out / "runs.csv", out / "comparison.csv"
    formatted = format_table(tabulated, table, bookkeeping) if not summary.empty else None
    found = findings(table) if not summary.empty else []
    md = markdown_table(tabulated, table, bookkeeping, formatted) + end_note(formatted, table)
    md += findings_markdown(found)
    write_text_atomic(out / "comparison.md", md)
    files["comparison.md"] = out / "comparison.md"
    notes: list[str] = []
    if not summary.empty:
        chosen = panels(table, summary, bookkeeping)
        files.update(metric_figures(summary, table, out, bookkeeping=bookkeeping, references=references))
        denoise = denoise_figure(summary, table, out / "denoise_psnr.png")
        if denoise:
            files["denoise_psnr"] = denoise
        if not table.completed["run"].str.startswith(TRACKED).any():
            path = curves_figure(table, chosen, out / "curves.png", curves)
            if path:
                files["curves"] = path
        if grid_images > 0:
            grid_files, grid_notes = _grids(table, out, grid_images)
            files.update(grid_files)
            notes += grid_notes
    report = write_report(table, summary, md, files, sources, notes, out)
    files["report.md"] = report
    study = study_commands(paths) if paths and not (mlflow_uri or wandb_path) else []
    files["report.html"] = write_html_report(table, formatted, files, sources, notes, out, command, study, found)
    return Comparison(table=table, summary=summary, out_dir=out, files=files, findings=found)


def end_note(formatted, table: RunTable | None = None) -> str:
    """What the table's "at the end" column means (when it has one), and what its ± over seeds covers."""
    split = split_text(table) if table is not None else ""
    out = f"\n_± over seeds_: {split}\n" if split else ""
    if formatted is None or "at the end" not in formatted.header:
        return out
    return out + f"\n_at the end_: {CONVERGENCE_RULE}\n"


def write_report(
    table: RunTable,
    summary: pd.DataFrame,
    md: str,
    files: dict[str, Path],
    sources: list[str],
    notes: list[str],
    out: Path,
) -> Path:
    """``report.md``: what was compared, the table, the figures and the runs left out."""
    frame = table.frame
    counts = frame["status"].value_counts().to_dict()
    lines = [f"# Comparison of {', '.join(sources)}", ""]
    lines.append(f"Generated {datetime.now().astimezone().isoformat(timespec='seconds')} by `aelab-compare`.")
    lines.append("")
    lines.append("Runs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + ".")
    if table.setting_keys:
        varying = []
        for key in table.setting_keys:
            values = sorted({str(v) for v in frame[key]}, key=lambda v: (len(v), v))
            varying.append(f"`{key}` ∈ {{{', '.join(values)}}}")
        lines.append("Varying: " + "; ".join(varying) + ".")
        if table.echoes:
            lines.append(" ".join(f"`{k}` follows `{v}`." for k, v in table.echoes.items()))
    seeds = sorted({str(s) for s in frame.get("seed", pd.Series(dtype=object)).dropna()})
    if len(seeds) > 1:
        lines.append(
            f"Seeds {', '.join(seeds)}: values are mean ± std over seeds (sample std, n in the last column), "
            "rounded where the spread makes further digits noise; comparison.csv keeps every digit."
        )
    lines += ["", "## Results", "", md]
    figures = [(k, v) for k, v in files.items() if v.suffix == ".png"]
    if figures:
        lines += ["## Figures", ""]
        for key, path in figures:
            lines += [f"### {key}", "", f"![{key}]({path.name})", ""]
    if table.problems:
        lines += ["## Runs not included", ""]
        for p in table.problems:
            reason = f": {p['error']}" if p.get("error") else ""
            lines.append(f"- **{p['status']}** `{p['run']}`{reason}")
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += [
        "## Files",
        "",
        "- `comparison.csv`: per setting, mean / std / n of each metric",
        "- `runs.csv`: one row per run",
        "- `comparison.md`: the table above",
        "- `report.html`: this report as one self-contained page (figures embedded, sortable tables)",
        "- every figure as PNG and PDF",
        "",
    ]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path

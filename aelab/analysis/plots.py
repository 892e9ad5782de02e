"""Comparison figures with matplotlib: metrics against bottleneck size, training curves."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from aelab.analysis.table import RunTable  # noqa: E402
from aelab.store.files import save_figure  # noqa: E402


def x_key(table: RunTable) -> str | None:
    """The key plotted on the x axis: the bottleneck when it varies, else the first numeric varying key."""
    if "model.bottleneck" in table.setting_keys:
        return "model.bottleneck"
    for key in table.setting_keys:
        if pd.to_numeric(table.frame[key], errors="coerce").notna().all():
            return key
    return None


def variant_keys(table: RunTable, x: str | None) -> list[str]:
    return [k for k in table.setting_keys if k != x]


def variant_name(row: dict, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys) or "all runs"


def plot_metric(summary: pd.DataFrame, table: RunTable, metric: str, ax: plt.Axes) -> None:
    """One line per variant: ``metric`` (mean, error bars = std over seeds) against the x key."""
    x = x_key(table)
    keys = variant_keys(table, x)
    if x is None:
        names = [variant_name(r, keys) for r in summary.to_dict("records")]
        interval = summary[f"{metric}_ci95"].fillna(0) if f"{metric}_ci95" in summary else None
        ax.bar(
            range(len(names)),
            summary[metric],
            yerr=summary[f"{metric} std"].fillna(0) if interval is None else interval,
            capsize=3,
        )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        if interval is not None:
            ax.set_title("bars: 95 % interval of one run's gap (mean over seeds)", fontsize=8)
    else:
        groups = summary.groupby(keys, sort=True, dropna=False) if keys else [((), summary)]
        for name, group in groups:
            name = name if isinstance(name, tuple) else (name,)
            xs = pd.to_numeric(group[x], errors="coerce")
            order = xs.argsort()
            line = ax.errorbar(
                xs.iloc[order],
                group[metric].iloc[order],
                yerr=group[f"{metric} std"].iloc[order].fillna(0),
                marker="o",
                capsize=3,
                label=", ".join(f"{k}={v}" for k, v in zip(keys, name)) or None,
            )
            if f"{metric}_ci95" in group and group[f"{metric}_ci95"].notna().any():
                # the gap's own noise floor: the 95 % interval of one run's estimate (mean over seeds), as a band
                mean, ci = group[metric].iloc[order], group[f"{metric}_ci95"].iloc[order].fillna(0)
                ax.fill_between(xs.iloc[order], mean - ci, mean + ci, color=line[0].get_color(), alpha=0.15, lw=0)
        xs_all = pd.to_numeric(summary[x], errors="coerce")
        if x.endswith("bottleneck") and (xs_all > 0).all():
            ax.set_xscale("log", base=2)
            ticks = sorted(set(xs_all))
            ax.set_xticks(ticks, [str(int(t)) if float(t).is_integer() else str(t) for t in ticks])
        ax.set_xlabel("bottleneck size" if x.endswith("bottleneck") else x)
        if keys:
            ax.legend(fontsize=7)
    if metric == "params":
        ax.set_yscale("log")
    if metric.startswith("gap/"):
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        if f"{metric}_ci95" in summary and x is not None:
            ax.set_title("bars: std over seeds; band: 95 % interval of one run's gap", fontsize=8)
    ax.set_ylabel(table.info.label(metric))
    ax.grid(alpha=0.3)


def metric_figures(summary: pd.DataFrame, table: RunTable, out_dir: Path, metrics: Sequence[str]) -> dict[str, Path]:
    """One PNG per metric, plus ``overview.png`` with up to four panels."""
    out: dict[str, Path] = {}
    metrics = [m for m in metrics if m in summary.columns and summary[m].notna().any()]
    for metric in metrics:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        plot_metric(summary, table, metric, ax)
        fig.tight_layout()
        path = out_dir / f"{metric.replace('/', '_')}.png"
        save_figure(fig, path)
        out[metric] = path
    panels = [m for m in ("test/recon_loss", "gap/recon_loss", "eval/probe_acc", "params") if m in metrics]
    panels += [m for m in metrics if m not in panels][: 4 - len(panels)]
    if panels:
        cols = 2 if len(panels) > 1 else 1
        rows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
        for ax, metric in zip(axes.flat, panels):
            plot_metric(summary, table, metric, ax)
        for ax in list(axes.flat)[len(panels) :]:
            ax.axis("off")
        fig.tight_layout()
        path = out_dir / "overview.png"
        save_figure(fig, path)
        out["overview"] = path
    return out


def read_curves(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Per-epoch validation and eval-mode training losses from the run's CSV log."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    curves: dict[str, list[tuple[float, float]]] = {"val/recon_loss": [], "train_eval/recon_loss": []}
    if not path.is_file():
        return curves
    with open(path) as fh:
        for row in csv.DictReader(fh):
            for key in curves:
                if row.get(key) and row.get("epoch"):
                    curves[key].append((float(row["epoch"]) + 1, float(row[key])))
    return curves


def curves_figure(table: RunTable, runs: pd.DataFrame, out_path: Path) -> Path | None:
    """Training curves (validation solid, eval-mode training dashed) of the chosen runs."""
    if runs.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, row in enumerate(runs.to_dict("records")):
        curves = read_curves(Path(row["run"]))
        name = variant_name(row, table.setting_keys) if table.setting_keys else Path(row["run"]).name
        color = f"C{i % 10}"
        if curves["val/recon_loss"]:
            ax.plot(*zip(*curves["val/recon_loss"]), color=color, label=name)
        if curves["train_eval/recon_loss"]:
            ax.plot(*zip(*curves["train_eval/recon_loss"]), color=color, ls="--", alpha=0.7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("reconstruction MSE (solid: val, dashed: train, eval mode)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, out_path)
    return out_path


def denoise_figure(summary: pd.DataFrame, table: RunTable, out_path: Path) -> Path | None:
    """PSNR of the denoised images at each test corruption, one line per setting, and the noisy input (dashed)."""
    levels = [
        c[len("eval/denoise/") : -len("/psnr")]
        for c in summary.columns
        if c.startswith("eval/denoise/") and c.endswith("/psnr")
    ]
    if not levels:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = range(len(levels))
    for i, row in enumerate(summary.to_dict("records")):
        ax.plot(
            xs,
            [row[f"eval/denoise/{lv}/psnr"] for lv in levels],
            marker="o",
            color=f"C{i % 10}",
            label=variant_name(row, table.setting_keys),
        )
    inputs = [f"eval/denoise/{lv}/psnr_input" for lv in levels]
    if all(c in summary.columns for c in inputs):
        ax.plot(
            xs, [summary[c].mean() for c in inputs], color="black", ls="--", marker="x", label="noisy input (baseline)"
        )
    ax.set_xticks(list(xs), levels, rotation=20)
    ax.set_xlabel("test corruption")
    ax.set_ylabel("PSNR vs the clean image (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_path)
    return out_path

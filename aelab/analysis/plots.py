"""The figures of a comparison: each metric against the swept key, the learning curves, the denoising levels.

The panels are the study's own: its metrics (the columns its runs and evaluations declare, or those asked
for), each against the swept key (the bottleneck when it varies); a metric's declared baselines (PCA's error,
the noisy input's PSNR) on its axes; the overfitting gap with its interval. Bookkeeping (parameters, wall
time) gets a panel only on request. Everything is drawn in the house style (:mod:`aelab.analysis.style`).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from aelab.analysis import style
from aelab.analysis.table import BOOKKEEPING, RunTable, split_text

#: a figure of panels has at most this many columns
MAX_COLUMNS = 4


def grid_columns(n: int) -> int:
    """Columns for ``n`` panels: the fewest empty cells, then the squarer grid (7 panels: 4 + 3, not 3 + 3 + 1)."""
    if n <= 3:
        return max(1, n)
    return min(range(2, MAX_COLUMNS + 1), key=lambda c: (-n % c, abs(c - 3), -c))


#: the learning-curve figure draws at most this many variants (rows)
MAX_CURVE_ROWS = 4


def x_key(table: RunTable) -> str | None:
    """The key on the x axis: the bottleneck when it varies, else the first varying key whose values are numbers."""
    if "model.bottleneck" in table.setting_keys:
        return "model.bottleneck"
    for key in table.setting_keys:
        if style.is_numeric(table.frame[key].dropna()) and table.frame[key].notna().all():
            return key
    return None


def variant_keys(table: RunTable, x: str | None) -> list[str]:
    """The varying keys other than the x key: each combination of their values is one line (a variant)."""
    return [k for k in table.setting_keys if k != x]


def variant_name(row: dict, keys: Sequence[str]) -> str:
    """A variant as a legend entry: its values (``conv``, ``0.5``); the legend title names the keys."""
    if not keys:
        return "all runs"
    return ", ".join(style.value_text(row[k]) for k in keys)


def variant_title(keys: Sequence[str]) -> str:
    return ", ".join(style.key_label(k) for k in keys)


def _wrap(label: str, width: int = 26) -> str:
    return "\n".join(textwrap.wrap(label, width)) or label


@dataclass
class Panel:
    """One panel: a metric and the baselines drawn on its axes."""

    metric: str
    baselines: list[str] = field(default_factory=list)


def panels(table: RunTable, summary: pd.DataFrame, bookkeeping: bool = False) -> list[Panel]:
    """The study's panels: its metrics with values, each with the baselines declared for it (``baseline_for``).

    A baseline is drawn on its metric's axes, not in a panel of its own (even when it is a table column); a
    gap's ``_ci95`` is its band; parameters and wall time get panels only with ``bookkeeping``.
    """

    def has_values(frame: pd.DataFrame, m: str) -> bool:
        return m in frame.columns and pd.to_numeric(frame[m], errors="coerce").notna().any()

    present = [m for m in table.metrics if has_values(summary, m)]
    present = [m for m in present if not m.endswith("_ci95") and (bookkeeping or m not in BOOKKEEPING)]
    # the best validation value restates the test value of the same quantity: one panel (the table keeps both)
    present = [m for m in present if not (m.startswith("best/val/") and f"test/{m[len('best/val/') :]}" in present)]
    # another reading of a metric that has a panel (PSNR of the same squared error): the table keeps it
    present = [m for m in present if not ((info := table.info.get(m)) and info.restates in present)]
    done = table.completed
    baselines: dict[str, list[str]] = {}
    for info in table.info:
        for target in info.baseline_of():
            if target in present and has_values(done, info.key):
                baselines.setdefault(target, []).append(info.key)
    folded = {b for found in baselines.values() for b in found}
    return [Panel(m, baselines.get(m, [])) for m in present if m not in folded]


# ------------------------------------------------------------------------------------------------ the runs
def _done(table: RunTable, metrics: Sequence[str]) -> pd.DataFrame:
    done = table.completed.copy()
    for m in metrics:
        if m in done.columns:
            done[m] = pd.to_numeric(done[m], errors="coerce")
    return done


def _variants(done: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """The completed runs split by variant, variants in value order."""
    if not keys:
        return [((), done)]
    groups = [((name if isinstance(name, tuple) else (name,)), g) for name, g in done.groupby(list(keys), dropna=False)]
    return sorted(groups, key=lambda item: tuple(style.order_key(v) for v in item[0]))


def _variant_colors(groups: list[tuple[tuple, pd.DataFrame]]) -> dict[tuple, object]:
    names = [name for name, _ in groups]
    if len(names) == 1:
        return {names[0]: style.CATEGORICAL[0]}
    if all(len(n) == 1 for n in names):
        by_value = style.colors(n[0] for n in names)
        return {n: by_value[n[0]] for n in names}
    return {n: style.CATEGORICAL[i % len(style.CATEGORICAL)] for i, n in enumerate(names)}


def _per_x(group: pd.DataFrame, x: str, metric: str) -> tuple[list[float], list[list[float]]]:
    """The x values of ``group`` (numeric order) and, at each, the runs' (seeds') values of ``metric``."""
    xs = style.ordered(group[x])
    values = [list(group.loc[group[x] == v, metric].dropna()) for v in xs]
    return [float(style.as_number(v)) for v in xs], values


def _improving(group: pd.DataFrame) -> pd.Series:
    """Which runs of ``group`` were still improving at their end (False where not known)."""
    if "still_improving" not in group.columns:
        return pd.Series(False, index=group.index)
    return group["still_improving"] == True  # noqa: E712 — True/False/None


def unsettled_line(table: RunTable) -> str:
    """The line every figure of ``table`` carries when some of its runs were still improving at their end."""
    done = table.completed
    if "still_improving" not in done.columns:
        return ""
    improving = done[_improving(done)]
    rates = pd.to_numeric(improving.get("improvement_pct_per_epoch"), errors="coerce").dropna()
    return style.unsettled_note(
        len(improving), int(done["still_improving"].notna().sum()), float(rates.max()) if len(rates) else None
    )


def _counts(done: pd.DataFrame, keys: Sequence[str], metric: str) -> list[int]:
    if not keys:
        return [int(done[metric].notna().sum())]
    return [int(n) for n in done.groupby(list(keys), dropna=False)[metric].count() if n]


def _gap_interval(mark: str, table: RunTable) -> str:
    """What a gap's band or error bar covers, and what the seeds' spread covers (the runs' splits)."""
    text = f"{mark}: 95 % interval of one run's gap over its images (its noise floor)"
    split = split_text(table)
    return f"{text}; {split}" if split else text


# ------------------------------------------------------------------------------------------------ one panel
@dataclass
class Drawn:
    """What :func:`draw_metric` drew: the variants' lines (a legend shared by every panel), the panel's own marks
    (its baselines and references, named in the panel), the runs per setting and what a band means."""

    lines: dict[str, object] = field(default_factory=dict)
    own: dict[str, object] = field(default_factory=dict)
    counts: list[int] = field(default_factory=list)
    interval: str | None = None


def draw_metric(ax, table: RunTable, panel: Panel, references: dict[str, tuple[float, str]] | None = None) -> Drawn:
    """Draw ``panel`` on ``ax``: one line per variant against the x key (or bars per setting), the baselines."""
    metric = panel.metric
    x = x_key(table)
    keys = variant_keys(table, x)
    done = _done(table, [metric, f"{metric}_ci95", *panel.baselines])
    groups = _variants(done, keys)
    colors = _variant_colors(groups)
    drawn = Drawn(counts=_counts(done, table.setting_keys, metric))
    if x is not None:
        spread = 0.08 * (len(groups) > 1)
        for i, (name, group) in enumerate(groups):
            xs, values = _per_x(group, x, metric)
            label = variant_name(dict(zip(keys, name)), keys) if keys else style.key_label(metric)
            offset = spread * (i - (len(groups) - 1) / 2)
            line = style.seed_series(ax, xs, values, colors[name], label, offset=offset)
            flagged = set(group.loc[_improving(group), x])
            rings = [
                (xv, float(np.mean(v)))
                for raw, xv, v in zip(style.ordered(group[x]), xs, values)
                if raw in flagged and v
            ]
            style.unsettled(ax, [r[0] for r in rings], [r[1] for r in rings], colors[name])
            if keys:  # one line per variant: the legend names them; a single line needs no legend
                drawn.lines[label] = line
            ci = f"{metric}_ci95"
            if ci in group.columns and group[ci].notna().any():
                _, half = _per_x(group, x, ci)
                means = [np.mean(v) if v else np.nan for v in values]
                style.interval_band(ax, xs, means, [np.mean(h) if h else np.nan for h in half], colors[name])
                drawn.interval = _gap_interval("band", table)
        for b in panel.baselines:
            xs, values = _per_x(done, x, b)
            keep = [i for i, v in enumerate(values) if v]
            if keep:
                means = [float(np.mean(values[i])) for i in keep]
                drawn.own[table.info.label(b)] = style.baseline(ax, [xs[i] for i in keep], means, table.info.label(b))
        style.value_axis(ax, [float(style.as_number(v)) for v in style.ordered(done[x])], x)
        ax.set_xlabel(style.key_label(x))
    else:  # no swept number: a dot per setting, named on the axis
        names = [name for name, _ in groups]
        positions = np.arange(len(names), dtype=float)
        for pos, (name, group) in zip(positions, groups):
            style.seed_dots(ax, pos, list(group[metric].dropna()), colors[name])
            if _improving(group).any() and group[metric].notna().any():
                style.unsettled(ax, [pos], [float(group[metric].mean())], colors[name])
            ci = f"{metric}_ci95"
            if ci in group.columns and group[ci].notna().any():  # the gap's noise floor, as an error bar
                mean, half = group[metric].mean(), group[ci].mean()
                ax.errorbar([pos], [mean], yerr=[half], fmt="none", ecolor="0.25", elinewidth=1.0, capsize=4, zorder=4)
                drawn.interval = _gap_interval("error bar", table)
        for b in panel.baselines:
            ys = [float(g[b].mean()) if b in g and g[b].notna().any() else np.nan for _, g in groups]
            drawn.own[table.info.label(b)] = style.baseline_segments(ax, positions, ys, 0.45, table.info.label(b))
        ticks = [variant_name(dict(zip(keys, n)), keys) for n in names]
        ax.set_xticks(positions, ticks, rotation=30 if max(map(len, ticks), default=0) > 6 else 0, ha="right")
        ax.set_xlim(-0.6, len(names) - 0.4)
        if keys:
            ax.set_xlabel(variant_title(keys))
        ax.grid(axis="x", visible=False)
    for m, (value, label) in (references or {}).items():
        if m == metric:
            drawn.own[label] = style.reference(ax, value, label)
    if metric.startswith("gap/"):
        style.zero_line(ax)
    if metric == "params":  # whole numbers with separators (1,083,696), not 1.0837×10⁶
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_ylabel(_wrap(table.info.label(metric)))
    if drawn.own:
        style.legend(ax, list(drawn.own.values()), list(drawn.own))
    return drawn


@style.styled
def metric_figures(
    summary: pd.DataFrame,
    table: RunTable,
    out_dir: Path,
    metrics: Sequence[str] | None = None,
    bookkeeping: bool = False,
    references: dict[str, tuple[float, str]] | None = None,
) -> dict[str, Path]:
    """One figure per panel (``<metric>.png`` and ``.pdf``) and ``overview.png`` with every panel.

    ``metrics`` limits the panels to those metrics (default: the table's).
    """
    chosen = panels(table, summary, bookkeeping)
    if metrics is not None:
        chosen = [p for p in chosen if p.metric in metrics]
    out: dict[str, Path] = {}
    if not chosen:
        return out
    title = variant_title(variant_keys(table, x_key(table))) or None
    mark = "dot" if x_key(table) is None else "line"
    for panel in chosen:
        fig, axes = style.figure(1, 1)
        drawn = draw_metric(axes[0, 0], table, panel, references)
        if drawn.lines:
            style.legend(fig, list(drawn.lines.values()), list(drawn.lines), title, outside=True)
        style.note(fig, style.spread_note(drawn.counts, interval=drawn.interval, mark=mark), unsettled_line(table))
        out[panel.metric] = style.save(fig, out_dir / f"{panel.metric.replace('/', '_')}.png")
    cols = grid_columns(len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig, axes = style.figure(rows, cols)
    counts: list[int] = []
    intervals: set[str] = set()
    lines: dict[str, object] = {}
    for ax, panel in zip(axes.flat, chosen):
        drawn = draw_metric(ax, table, panel, references)
        counts += drawn.counts
        intervals |= {drawn.interval} if drawn.interval else set()
        for label, line in drawn.lines.items():  # the variants' lines are the same in every panel: one legend
            lines.setdefault(label, line)
    for ax in list(axes.flat)[len(chosen) :]:
        ax.axis("off")
    if lines:
        style.legend(fig, list(lines.values()), list(lines), title, outside=True)
    style.note(fig, style.spread_note(counts, "; ".join(sorted(intervals)) or None, mark=mark), unsettled_line(table))
    out["overview"] = style.save(fig, out_dir / "overview.png")
    return out


# ------------------------------------------------------------------------------------------------ learning curves
def read_curves(run_dir: Path) -> pd.DataFrame:
    """The run's per-epoch values from its CSV log, one row per epoch, epochs counted from 1."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return pd.DataFrame()
    frame = pd.read_csv(path)
    if "epoch" not in frame.columns:
        return pd.DataFrame()
    frame = frame[frame["epoch"].notna()]
    per_epoch = frame.drop(columns=[c for c in ("step",) if c in frame.columns]).groupby("epoch").last()
    per_epoch.index = per_epoch.index.astype(int) + 1  # Lightning counts from 0; aelab's figures from 1
    return per_epoch


def curve_quantities(table: RunTable, chosen: Sequence[Panel], curves: dict[str, pd.DataFrame]) -> list[str]:
    """The quantities with a validation curve among the panels' metrics (``test/recon_loss`` → ``recon_loss``)."""
    columns = set().union(*(set(c.columns) for c in curves.values())) if curves else set()
    out: list[str] = []
    for panel in chosen:
        parts = panel.metric.split("/")
        name = parts[-1] if parts[0] in ("test", "val", "best", "train", "train_eval", "gap") else None
        if name and f"val/{name}" in columns and name not in out:
            out.append(name)
    if not out and "val/recon_loss" in columns:
        out.append("recon_loss")
    return out


def _train_key(name: str, columns: set[str]) -> tuple[str | None, str]:
    for key, what in (
        (f"train_eval/{name}", "training set (eval mode)"),
        (f"train/{name}_epoch", "training (epoch mean, train mode)"),
        (f"train/{name}", "training (train mode)"),
    ):
        if key in columns:
            return key, what
    return None, ""


def _band(frames: list[pd.DataFrame], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Epochs, mean over seeds, and the band (range of the seeds when ≤ 5, ± 1 std when more) of ``key``."""
    series = [f[key].dropna() for f in frames if key in f.columns and f[key].notna().any()]
    if not series:
        empty = np.array([])
        return empty, empty, empty, empty, 0
    joined = pd.concat(series, axis=1)
    epochs = joined.index.to_numpy(dtype=float)
    mean = joined.mean(axis=1).to_numpy()
    if len(series) <= style.MAX_SEED_POINTS:
        lo, hi = joined.min(axis=1).to_numpy(), joined.max(axis=1).to_numpy()
    else:
        std = joined.std(axis=1, ddof=1).fillna(0).to_numpy()
        lo, hi = mean - std, mean + std
    return epochs, mean, lo, hi, len(series)


def _curve_settings(done: pd.DataFrame, x: str | None, keys: Sequence[str], limit: int) -> list[tuple[tuple, list]]:
    """Per variant (≤ :data:`MAX_CURVE_ROWS`), its settings ``(x value, runs)`` in value order; ``limit`` settings
    in all."""
    out, left = [], max(limit, 0)
    for name, group in _variants(done, keys)[:MAX_CURVE_ROWS]:
        values = style.ordered(group[x]) if x else [None]
        settings = [(v, group if v is None else group[group[x] == v]) for v in values][:left]
        left -= len(settings)
        if settings:
            out.append((name, settings))
    return out


def _log_scale_if_wide(ax, name: str) -> None:
    values = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    values = np.concatenate(values) if values else np.array([])
    if name.endswith("loss") and len(values) and values.min() > 0 and values.max() / values.min() > 3:
        ax.set_yscale("log")
        style.plain_log_ticks(ax)


@style.styled
def curves_figure(table: RunTable, chosen: Sequence[Panel], out_path: Path, limit: int = 12) -> Path | None:
    """Learning curves: one panel per quantity (a row per variant), validation solid and training dashed in the
    same colour, the mean over seeds with a band; the colour is the swept value, in order. ``limit``: settings."""
    done = table.completed
    if done.empty or limit <= 0:
        return None
    x = x_key(table)
    keys = variant_keys(table, x)
    curves = {run: read_curves(Path(run)) for run in done["run"]}
    curves = {run: c for run, c in curves.items() if not c.empty}
    quantities = curve_quantities(table, chosen, curves)
    rows = _curve_settings(done, x, keys, limit)
    if not quantities or not rows:
        return None
    color_of = style.colors(done[x]) if x else {}
    fig, axes = style.figure(len(rows), len(quantities), sharex=True)
    counts: list[int] = []
    handles: dict[str, object] = {}
    train_what = ""
    for r, (vname, settings) in enumerate(rows):
        for c, name in enumerate(quantities):
            ax = axes[r, c]
            for value, runs in settings:
                frames = [curves[run] for run in runs["run"] if run in curves]
                columns = set().union(*(set(f.columns) for f in frames)) if frames else set()
                color = color_of.get(value, style.CATEGORICAL[0])
                epochs, mean, lo, hi, n = _band(frames, f"val/{name}")
                if n:
                    (line,) = ax.plot(epochs, mean, color=color)
                    ax.fill_between(epochs, lo, hi, color=color, alpha=0.18, lw=0)
                    if _improving(runs).any():  # the end of a curve that was still falling (rising)
                        style.unsettled(ax, epochs[-1:], mean[-1:], color)
                    handles.setdefault(style.value_text(value) if x else "validation", line)
                    counts.append(n)
                train_key, what = _train_key(name, columns)
                epochs, mean, lo, hi, n = _band(frames, train_key) if train_key else (None, None, None, None, 0)
                if n:  # on top of the validation line, lighter: visible where the two coincide
                    ax.plot(epochs, mean, color=style.lighten(color), ls=(0, (3, 2)), lw=1.4, zorder=3)
                    ax.fill_between(epochs, lo, hi, color=color, alpha=0.10, lw=0)
                    train_what = train_what or what
            style.epoch_axis(ax)
            if r < len(rows) - 1:
                ax.set_xlabel("")
            label = table.info.label(f"val/{name}")
            ax.set_ylabel(_wrap(label[len("val ") :] if label.startswith("val ") else label, 28))
            _log_scale_if_wide(ax, name)
            if keys:
                ax.set_title(f"{variant_title(keys)}: {variant_name(dict(zip(keys, vname)), keys)}")
    from matplotlib.lines import Line2D

    items = dict(handles) if x else {}
    items["validation"] = Line2D([], [], color="0.3")
    if train_what:
        items[train_what] = Line2D([], [], color=style.lighten("0.3"), ls=(0, (3, 2)), lw=1.4)
    style.legend(fig, list(items.values()), list(items), title=style.key_label(x) if x else None, outside=True)
    most = max(counts, default=0)
    n_values = sorted(set(counts))
    n_text = str(n_values[0]) if len(n_values) == 1 else f"{n_values[0]}–{n_values[-1]}"
    band = "range of the seeds" if most <= style.MAX_SEED_POINTS else "± 1 std over the seeds"
    text = f"line: mean of n = {n_text} seeds; band: {band}" if most > 1 else "one run per setting (n = 1)"
    style.note(fig, text + "; epoch 1 = the first epoch", unsettled_line(table))
    return style.save(fig, out_path)


# ------------------------------------------------------------------------------------------------ denoising
@style.styled
def denoise_figure(summary: pd.DataFrame, table: RunTable, out_path: Path) -> Path | None:
    """PSNR of the denoised test images at each test corruption: bars per trained setting (mean over seeds,
    seeds as points), the noisy input's PSNR as the baseline on the same axes."""
    levels = [
        c[len("eval/denoise/") : -len("/psnr")]
        for c in summary.columns
        if c.startswith("eval/denoise/") and c.endswith("/psnr")
    ]
    if not levels:
        return None
    keys = table.setting_keys
    done = _done(table, [f"eval/denoise/{lv}/{k}" for lv in levels for k in ("psnr", "psnr_input")])
    groups = _variants(done, keys)
    colors = _variant_colors(groups)
    fig, axes = style.figure(1, 1, panel=(max(4.0, 0.22 * len(levels) * len(groups) + 1.2), 2.8))
    ax = axes[0, 0]
    width = 0.8 / max(len(groups), 1)
    handles, labels, counts = [], [], []
    for i, (name, group) in enumerate(groups):
        positions = np.arange(len(levels)) + (i - (len(groups) - 1) / 2) * width
        values = [list(group[f"eval/denoise/{lv}/psnr"].dropna()) for lv in levels]
        label = variant_name(dict(zip(keys, name)), keys)
        handles.append(style.seed_bars(ax, positions, values, colors[name], width * 0.95, label))
        labels.append(label)
        counts += [len(v) for v in values]
    inputs = [f"eval/denoise/{lv}/psnr_input" for lv in levels]
    if all(c in done.columns for c in inputs):
        values = [float(done[c].mean()) for c in inputs]
        handles.append(style.baseline_segments(ax, np.arange(len(levels)), values, 0.45, "noisy input (no model)"))
        labels.append("noisy input (no model)")
    from aelab.evaluation.denoising import level_caption

    ax.set_xticks(np.arange(len(levels)), [_wrap(level_caption(lv), 16) for lv in levels])
    ax.set_xlabel("test corruption")
    ax.set_ylabel("PSNR vs the clean image (dB)")
    ax.grid(axis="x", visible=False)
    style.legend(fig, handles, labels, title=variant_title(keys) or None, outside=True)
    style.note(fig, style.spread_note(counts, mark="bars"), unsettled_line(table))
    return style.save(fig, out_path)

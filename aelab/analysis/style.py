"""The house style of every figure aelab draws: one look, one colour order, one way to show seeds and baselines.

Every matplotlib figure in aelab (``aelab-compare``'s, the ablations', the evaluations') is drawn inside
:func:`styled` and written by :func:`save` (PNG for screens and a PDF for papers, through
:func:`aelab.store.files.save_figure`). The rules, in one place:

* constrained layout, so nothing is clipped; 8–9 pt type at the size a paper prints a one-column panel;
* settings ordered by value (``2, 4, 8, 16`` — never the string order ``16, 2, 4``), legends in that order;
* a swept number gets a colour from a sequential, colour-blind-safe map (viridis) in the order of its values;
  named settings get matplotlib's accessible ten-colour cycle (Petroff 2021);
* epochs are counted from 1 (``epoch 1`` is the first epoch) on integer ticks;
* a size (bottleneck, latent size) is drawn on a log2 axis with a tick at every value;
* over seeds: a mean line (a dot for a named setting, grouped bars for denoising levels), and each seed's point
  when there are at most :data:`MAX_SEED_POINTS` seeds, else a band (error bar) of ± one standard deviation;
  what the marks mean and n are written on the figure (:func:`spread_note`);
* baselines (PCA, the noisy input) are black dashed lines on the axes of what they are compared with; a published
  number is a grey dash-dotted line (:func:`baseline`, :func:`reference`).
"""

from __future__ import annotations

import functools
import logging
import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 — the backend is chosen before pyplot is imported
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator  # noqa: E402

#: the settings every figure is drawn under (matplotlib rcParams)
RC: dict[str, Any] = {
    "figure.constrained_layout.use": True,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": plt.style.library["petroff10"]["axes.prop_cycle"],
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "lines.markersize": 4.5,
    "image.cmap": "viridis",
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text (editable, searchable) in a paper's figure
    "svg.fonttype": "none",
}
#: one panel's size in inches (a one-column figure in a two-column paper is about 3.3 in wide)
PANEL = (3.2, 2.5)
#: the sequential map for swept numbers, and the part of it used (its lightest yellow is hard to see on white)
SEQUENTIAL = "viridis"
SEQUENTIAL_RANGE = (0.0, 0.85)
#: named settings: matplotlib's accessible colour cycle (Petroff 2021, "petroff10")
CATEGORICAL = [c["color"] for c in plt.style.library["petroff10"]["axes.prop_cycle"]]
BASELINE = {"color": "black", "ls": "--", "lw": 1.2, "marker": "x", "ms": 4.5, "zorder": 4}
REFERENCE = {"color": "0.35", "ls": "-.", "lw": 1.1, "zorder": 1}
#: up to this many seeds, each seed's value is drawn as a point; above it, a band of ± one std
MAX_SEED_POINTS = 5
#: config keys whose values are sizes (drawn on a log2 axis)
SIZE_WORDS = ("bottleneck", "size", "latent", "dim", "width", "hidden", "channels", "num_train", "limit_train")

F = TypeVar("F", bound=Callable[..., Any])


def styled(func: F) -> F:
    """Run ``func`` (a function that draws and saves a figure) under the house style."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with plt.rc_context(RC):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def figure(rows: int = 1, cols: int = 1, panel: tuple[float, float] = PANEL, **kwargs):
    """A figure of ``rows`` × ``cols`` panels of the house size (call inside :func:`styled`)."""
    width, height = panel
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, **kwargs)
    return fig, axes


def save(fig, path: str | Path, trim: bool = False) -> Path:
    """Write ``fig`` as ``path`` (PNG) and a PDF next to it, under the house style, and close it.

    ``trim``: cut the figure to what is drawn (image grids, whose fixed aspect leaves a margin).
    """
    from aelab.store.files import save_figure

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # the PDF writer's font subsetting talks at INFO
    with plt.rc_context(RC):
        options = {"bbox_inches": "tight", "pad_inches": 0.04} if trim else {}
        return save_figure(fig, Path(path), dpi=RC["savefig.dpi"], vector="pdf", **options)


# ------------------------------------------------------------------------------------------------ order and colour
def as_number(value: Any) -> float | None:
    """``value`` as a float when it is a number (or a string of one), else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def order_key(value: Any) -> tuple:
    """A sort key that puts numbers in numeric order (before names, which sort as text)."""
    number = as_number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def ordered(values: Iterable[Any]) -> list[Any]:
    """The distinct ``values`` in numeric order (``2, 4, 16`` — not ``16, 2, 4``)."""
    seen: dict[Any, None] = {}
    for value in values:
        seen.setdefault(value, None)
    return sorted(seen, key=order_key)


def is_numeric(values: Iterable[Any]) -> bool:
    values = list(values)
    return bool(values) and all(as_number(v) is not None for v in values)


def colors(values: Iterable[Any]) -> dict[Any, Any]:
    """A colour per distinct value: sequential (viridis, by value) for numbers, the accessible cycle for names."""
    distinct = ordered(values)
    if len(distinct) > 1 and is_numeric(distinct):
        cmap = matplotlib.colormaps[SEQUENTIAL]
        lo, hi = SEQUENTIAL_RANGE
        return {v: cmap(lo + (hi - lo) * i / (len(distinct) - 1)) for i, v in enumerate(distinct)}
    return {v: CATEGORICAL[i % len(CATEGORICAL)] for i, v in enumerate(distinct)}


def lighten(color: Any, amount: float = 0.45) -> tuple:
    """``color`` mixed with white (``amount`` of white): a second line of the same colour that stays visible on top
    of the first where the two coincide."""
    r, g, b, _ = matplotlib.colors.to_rgba(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount, 1.0)


def value_text(value: Any) -> str:
    """A setting's value as a reader sees it: ``16`` not ``16.0``, ``0.5`` not ``0.50000001``."""
    number = as_number(value)
    if number is None or isinstance(value, str) and not value.replace(".", "", 1).lstrip("-").isdigit():
        return str(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


# ------------------------------------------------------------------------------------------------ axes
def is_size_key(key: str | None) -> bool:
    """Whether the config key ``key`` holds a size (drawn on a log2 axis)."""
    return bool(key) and any(word in key.rsplit(".", 1)[-1] for word in SIZE_WORDS)


def key_label(key: str | None) -> str:
    """An axis or legend label for a config key: ``model.bottleneck`` → ``bottleneck size``."""
    if not key:
        return ""
    last = key.rsplit(".", 1)[-1]
    return {
        "bottleneck": "bottleneck size",
        "beta": "β",
        "noise": "training corruption",
        "model": "model",
        "normal_class": "normal class",
        "upsample": "decoder upsampling",
    }.get(last, key)


def value_axis(ax, values: Sequence[float], key: str | None, axis: str = "x") -> None:
    """Ticks at exactly the swept ``values``; a log2 scale when they are sizes (all positive, spanning ≥ 4×)."""
    values = sorted({float(v) for v in values})
    if not values:
        return
    setter = ax.set_xscale if axis == "x" else ax.set_yscale
    target = ax.xaxis if axis == "x" else ax.yaxis
    if is_size_key(key) and values[0] > 0 and values[-1] / values[0] >= 4:
        setter("log", base=2)
    elif values[0] > 0 and len(values) > 2 and values[-1] / values[0] >= 16:  # β and friends spanning decades
        setter("log")
    target.set_major_locator(FixedLocator(values))
    target.set_minor_locator(NullLocator())
    target.set_major_formatter(matplotlib.ticker.FixedFormatter([value_text(v) for v in values]))


def epoch_axis(ax) -> None:
    """The x axis counts epochs from 1, on whole-number ticks."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")


# ------------------------------------------------------------------------------------------------ marks
def seed_series(
    ax,
    xs: Sequence[float],
    per_x: Sequence[Sequence[float]],
    color: Any,
    label: str | None = None,
    marker: str = "o",
    offset: float = 0.0,
) -> Any:
    """The mean over seeds at each x as a line; each seed's point (≤ 5 seeds) or a ± 1 std band (more).

    ``offset`` shifts the seed points sideways (a fraction of a log2 step on size axes) so variants
    drawn at the same x stay apart; returns the mean line (for the legend).
    """
    xs = np.asarray(xs, dtype=float)
    values = [np.asarray([v for v in vs if v is not None and not math.isnan(v)], dtype=float) for vs in per_x]
    keep = [i for i, v in enumerate(values) if len(v)]
    xs, values = xs[keep], [values[i] for i in keep]
    if not len(xs):
        return None
    means = np.array([v.mean() for v in values])
    (line,) = ax.plot(xs, means, color=color, marker=marker, label=label, zorder=3)
    most = max(len(v) for v in values)
    if 1 < most <= MAX_SEED_POINTS:
        shifted = xs * 2**offset if ax.get_xscale() == "log" else xs + offset
        for x, v in zip(shifted, values):
            ax.scatter(np.full(len(v), x), v, s=12, facecolor="white", edgecolor=color, linewidth=1.0, zorder=3.5)
    elif most > MAX_SEED_POINTS:
        stds = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
        ax.fill_between(xs, means - stds, means + stds, color=color, alpha=0.18, lw=0, zorder=2)
    return line


def interval_band(ax, xs: Sequence[float], means: Sequence[float], half_widths: Sequence[float], color: Any) -> None:
    """A light band of ``means ± half_widths`` (e.g. the 95 % interval of one run's gap)."""
    xs, means, half = (np.asarray(a, dtype=float) for a in (xs, means, half_widths))
    ok = ~(np.isnan(means) | np.isnan(half))
    ax.fill_between(xs[ok], (means - half)[ok], (means + half)[ok], color=color, alpha=0.15, lw=0, zorder=1)


def seed_bars(
    ax, positions: Sequence[float], per_x: Sequence[Sequence[float]], color: Any, width: float, label: str | None
) -> Any:
    """Bars of the mean over seeds with each seed's point (≤ 5 seeds) or a ± 1 std error bar (more)."""
    values = [np.asarray([v for v in vs if v is not None and not math.isnan(v)], dtype=float) for vs in per_x]
    means = [v.mean() if len(v) else np.nan for v in values]
    most = max((len(v) for v in values), default=0)
    errors = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in values] if most > MAX_SEED_POINTS else None
    bars = ax.bar(positions, means, width=width, color=color, alpha=0.85, label=label, yerr=errors, capsize=2)
    if 1 < most <= MAX_SEED_POINTS:  # side by side across the bar, so equal values stay countable
        for x, v in zip(positions, values):
            spread = np.linspace(-width / 4, width / 4, len(v)) if len(v) > 1 else np.zeros(1)
            ax.scatter(x + spread, v, s=12, facecolor="white", edgecolor="black", linewidth=0.8, zorder=3)
    return bars


def seed_dots(ax, position: float, values: Sequence[float], color: Any, width: float = 0.7) -> Any:
    """One named setting as a dot plot: the mean over seeds as a filled marker with a short bar across, each seed's
    point beside it (≤ 5 seeds) or a ± 1 std error bar (more). Unlike a bar, the axis need not start at zero, so a
    small difference (16.4 vs 16.7 dB, 243 vs a reported 235 nats) stays visible."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if not len(v):
        return None
    mean = float(v.mean())
    ax.hlines(mean, position - width / 3, position + width / 3, color=color, lw=2.2, zorder=3)
    (dot,) = ax.plot([position], [mean], "o", color=color, ms=7, zorder=3.5)
    if 1 < len(v) <= MAX_SEED_POINTS:  # side by side, so equal values stay countable
        spread = np.linspace(-width / 4, width / 4, len(v))
        ax.scatter(position + spread, v, s=14, facecolor="white", edgecolor=color, linewidth=1.0, zorder=4)
    elif len(v) > MAX_SEED_POINTS:
        ax.errorbar([position], [mean], yerr=[v.std(ddof=1)], fmt="none", ecolor=color, capsize=4, zorder=3)
    return dot


#: a setting with a run still improving at its end (:mod:`aelab.convergence`): its mean drawn as a large open ring
UNSETTLED = {"ls": "", "marker": "o", "ms": 10, "mfc": "none", "mew": 1.3, "zorder": 3.6}


def unsettled(ax, xs: Sequence[float], ys: Sequence[float], color: Any) -> Any:
    """Mark settings whose runs were still improving at their end: their means as large open rings."""
    if not len(xs):
        return None
    (ring,) = ax.plot(xs, ys, color=color, mec=color, **UNSETTLED)
    return ring


def unsettled_note(improving: int, assessed: int, largest: float | None) -> str:
    """The figure's line about runs still improving at their end (``""`` when none were)."""
    if not improving:
        return ""
    rate = f", up to {largest:.1f} % per epoch" if largest is not None and not math.isnan(largest) else ""
    return (
        f"NOT SETTLED: {improving} of {assessed} runs still improving at their end{rate} "
        "(large open ring: a setting with such runs, at its value or at the end of its curve)"
    )


def baseline(ax, xs: Sequence[float], ys: Sequence[float], label: str) -> Any:
    """A baseline (PCA, the noisy input) on the axes of what it is compared with: black, dashed."""
    (line,) = ax.plot(xs, ys, label=label, **BASELINE)
    return line


def baseline_segments(ax, positions: Sequence[float], values: Sequence[float], half_width: float, label: str) -> Any:
    """A baseline per named setting (dot and bar charts): a short black dashed line across each setting's place."""
    for x, y in zip(positions, values):
        if y is not None and not math.isnan(y):
            ax.hlines(y, x - half_width, x + half_width, color=BASELINE["color"], ls="--", lw=BASELINE["lw"], zorder=4)
    return matplotlib.lines.Line2D([], [], color=BASELINE["color"], ls="--", lw=BASELINE["lw"], label=label)


def reference(ax, value: float, label: str) -> Any:
    """A published number: a grey dash-dotted horizontal line."""
    return ax.axhline(value, label=label, **REFERENCE)


def zero_line(ax) -> None:
    ax.axhline(0, color="0.5", lw=0.8, ls=":", zorder=1)


#: what shows ± 1 std beside each kind of mark (more than :data:`MAX_SEED_POINTS` seeds)
SPREAD_MARK = {"line": "band", "dot": "error bar", "bars": "error bars"}


def spread_note(counts: Iterable[int], interval: str | None = None, mark: str = "line", what: str = "seeds") -> str:
    """What a figure's marks (``line``, ``dot`` or ``bars``) mean, with n: ``line: mean of n = 2 seeds; open
    points: each of them``."""
    counts = sorted({int(c) for c in counts if c})
    if not counts:
        return ""
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    most = counts[-1]
    if most <= 1:
        text = f"one run per setting (n = 1: no spread over {what} to show)"
    elif most <= MAX_SEED_POINTS:
        text = f"{mark}: mean of n = {n} {what}; open points: each of them"
    else:
        text = f"{mark}: mean of n = {n} {what}; {SPREAD_MARK[mark]}: ± 1 std"
    if interval:
        text += f"; {interval}"
    return text


def note(fig, text: str, first: str = "") -> None:
    """Write ``text`` (what the marks mean, n) under the figure, inside its layout; ``first``: a line above it that
    qualifies the whole figure (:func:`unsettled_note`)."""
    width = max(20, int(fig.get_figwidth() * 15))  # wrapped to the figure's width: layout engines never shorten text
    lines = [line for part in (first, text) if part for line in textwrap.wrap(part, width)]
    if lines:
        fig.supxlabel("\n".join(lines), fontsize=7.5, color="0.25")
        if len(lines) > 2:  # room for the lines beyond two (a layout engine shrinks the panels, never grows the figure)
            fig.set_figheight(fig.get_figheight() + 0.125 * (len(lines) - 2))


def legend(target, handles: Sequence[Any], labels: Sequence[str], title: str | None = None, outside: bool = False):
    """A legend in the given (value) order: to the right of the whole figure (``outside``, ``target`` a figure), or
    inside one panel (``target`` an axes), its axis padded so that a baseline does not lie on the frame."""
    pairs = [(h, lab) for h, lab in zip(handles, labels) if h is not None]
    if not pairs:
        return None
    handles, labels = zip(*pairs)
    if not outside:  # a panel's own legend (its baselines): inside the panel, where it covers the least
        target.set_ymargin(0.12)  # a baseline at the edge of the data (chance at the lowest accuracy) off the frame
        target.autoscale_view()
        return target.legend(handles, labels, title=title, loc="best", framealpha=0.85, fontsize="small")
    # to the right of the panels: the figure grows by the legend's width, so the panels keep theirs
    made = target.legend(handles, labels, title=title, loc="outside right upper")
    width = made.get_window_extent(target.canvas.get_renderer()).width / target.dpi
    target.set_size_inches(target.get_figwidth() + width + 0.15, target.get_figheight())
    return made


def plain_log_ticks(ax, axis: str = "y") -> None:
    """A log axis labelled with plain numbers (0.03, 0.05) instead of powers of ten (3 × 10⁻²)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    target.set_major_formatter(plain)
    target.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 3.0, 5.0)))
    target.set_minor_formatter(plain)

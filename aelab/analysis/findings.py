"""Findings computed from a comparison's table: what the numbers show about the swept key, and how sure they are.

The sentences, in order (each only when the table holds what it needs):

1. **not settled** — how many runs were still improving at their end (:mod:`aelab.convergence`) and the largest
   rate: it comes first because it qualifies the rest (more epochs would change the numbers);
2. per variant, where the headline metric (the first ``test/`` column with a direction) **stops improving** as the
   swept value grows. Each step between neighbouring values is judged by the 95 % interval of the change of the
   mean over seeds (Welch's t, unequal variances): *better* or *worse* when the interval excludes zero, *the same*
   when the whole interval lies within ±:data:`SAME` of the value (1 %), *unclear* otherwise. A plateau at a value
   is stated only when the step into it is better and every step after it is the same; improving at every step is
   "no plateau within the swept range"; anything else is "no plateau shown", with the steps' numbers;
3. how weak the interval is with few seeds (2 seeds: one degree of freedom, t = 12.7);
4. the overfitting gap: at which settings it differs from zero beyond its 95 % interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from aelab.analysis.style import key_label, order_key, value_text
from aelab.analysis.table import RunTable, shown_metrics, split_text

#: a change whose whole 95 % interval lies within ± this fraction of the value counts as no change
SAME = 0.01
LEVEL = 0.95


@dataclass
class Step:
    """The change of a metric's mean from one swept value to the next (``change``: positive = better)."""

    before: Any
    after: Any
    change_pct: float
    low_pct: float | None  # the 95 % interval of the change, % of the value before (None: fewer than 2 seeds)
    high_pct: float | None
    verdict: str  # better | worse | the same | unclear

    def text(self) -> str:
        interval = (
            f" [{self.low_pct:+.1f}, {self.high_pct:+.1f}]" if self.low_pct is not None else " (no interval: n < 2)"
        )
        return f"{value_text(self.before)}→{value_text(self.after)} {self.change_pct:+.1f} %{interval} {self.verdict}"


def welch_interval(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """``mean(b) − mean(a)`` and its ``level`` interval by Welch's t (None, None with fewer than 2 values a side)."""
    from scipy import stats

    diff = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, None, None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return diff, diff - half, diff + half


def steps(points: list[tuple[Any, np.ndarray]], higher_is_better: bool) -> list[Step]:
    """The judged steps between neighbouring swept values (``points``: value and its seeds' values, in order)."""
    sign = 1.0 if higher_is_better else -1.0
    out = []
    for (xa, a), (xb, b) in zip(points, points[1:]):
        diff, low, high = welch_interval(a, b)
        scale = 100.0 / abs(a.mean()) if a.mean() else 0.0
        change = sign * diff * scale
        lo, hi = (None, None) if low is None else sorted((sign * low * scale, sign * high * scale))
        if lo is None:
            verdict = "unclear"
        elif max(abs(lo), abs(hi)) <= 100 * SAME:
            verdict = "the same"
        elif lo > 0:
            verdict = "better"
        elif hi < 0:
            verdict = "worse"
        else:
            verdict = "unclear"
        out.append(Step(xa, xb, change, lo, hi, verdict))
    return out


def plateau_sentence(judged: list[Step], label: str, key: str) -> str:
    """Where ``label`` stops improving along ``key``, or why no plateau is stated."""
    if not judged:
        return ""
    verdicts = [s.verdict for s in judged]
    listing = "; ".join(s.text() for s in judged)
    last = judged[-1].after
    if all(v == "better" for v in verdicts):
        return (
            f"{label} improves at every step up to {key} {value_text(last)}, each beyond its 95 % interval: "
            f"no plateau within the swept range ({listing})."
        )
    for i in range(len(judged)):
        if all(v == "the same" for v in verdicts[i:]) and (i == 0 or verdicts[i - 1] == "better"):
            at = judged[i].before
            where = "is flat over the whole range" if i == 0 else f"stops improving at {key} {value_text(at)}"
            return (
                f"{label} {where}: every step after it changes it by less than {100 * SAME:g} % (its 95 % interval "
                f"within ±{100 * SAME:g} %) ({listing})."
            )
    return (
        f"No plateau shown for {label}: not every step is beyond (or shown within ±{100 * SAME:g} % by) its 95 % "
        f"interval ({listing})."
    )


def headline_metric(table: RunTable) -> str | None:
    """The metric the findings are about: the first ``test/`` column with a direction, else the first with one."""
    candidates = [m for m in shown_metrics(table) if table.info.higher_is_better(m) is not None]
    tests = [m for m in candidates if m.startswith("test/")]
    return (tests or candidates or [None])[0]


def _seeds_sentence(counts: list[int]) -> str:
    from scipy import stats

    out = []
    if counts and min(counts) <= 1:
        single = sum(c <= 1 for c in counts)
        out.append(
            f"{single} setting{'s have' if single > 1 else ' has'} one run: no spread over seeds, so no step into or "
            "out of it is judged."
        )
    typical = max((c for c in counts if c > 1), default=0)
    if 1 < typical <= 3:
        t = float(stats.t.ppf(0.5 + LEVEL / 2, typical - 1))
        out.append(
            f"With {typical} seeds per setting, Welch's interval rests on about {typical - 1} degree"
            f"{'s' if typical > 2 else ''} of freedom (t = {t:.1f}): weak evidence, only differences many times the "
            "seeds' spread count."
        )
    return " ".join(out)


def _gap_sentence(done: pd.DataFrame, table: RunTable, groups: list[tuple[tuple, pd.DataFrame]]) -> str:
    gaps = [m for m in shown_metrics(table) if m.startswith("gap/") and f"{m}_ci95" in done.columns]
    if not gaps:
        return ""
    gap = gaps[0]
    beyond, within = [], 0
    for name, group in groups:
        mean = pd.to_numeric(group[gap], errors="coerce").mean()
        half = pd.to_numeric(group[f"{gap}_ci95"], errors="coerce").mean()
        if math.isnan(mean) or math.isnan(half):
            continue
        if abs(mean) > half:
            beyond.append((name, mean, half))
        else:
            within += 1
    label = table.info.label(gap)
    keys = table.setting_keys
    split = split_text(table)
    covers = f" (the interval: one run's gap over its validation images{'; ' + split if split else ''})"
    if not beyond:
        return f"The {label} is within its 95 % interval of zero at every setting{covers}." if within else ""
    where = (
        "every setting"
        if not within
        else "; ".join(
            ", ".join(f"{key_label(k)} {value_text(v)}" for k, v in zip(keys, name)) for name, _, _ in beyond
        )
    )
    name, mean, half = max(beyond, key=lambda b: abs(b[1]))
    at = ", ".join(f"{key_label(k)} {value_text(v)}" for k, v in zip(keys, name))
    return (
        f"The {label} differs from zero beyond its 95 % interval at {where} (largest {mean:.3g} ± {half:.2g} at {at})"
        + (f"; within it at the {within} other setting{'s' if within != 1 else ''}" if within else "")
        + f"{covers}."
    )


def findings(table: RunTable, metric: str | None = None) -> list[str]:
    """The findings as sentences (see the module docstring); [] when the table has nothing to say."""
    from aelab.analysis.plots import variant_keys, x_key

    done = table.completed
    out: list[str] = []
    if done.empty:
        return out
    if "still_improving" in done.columns and done["still_improving"].notna().any():
        improving = done[done["still_improving"] == True]  # noqa: E712 — True/False/None
        if len(improving):
            rates = pd.to_numeric(improving["improvement_pct_per_epoch"], errors="coerce").dropna()
            largest = f", largest {rates.max():.1f} % per epoch" if len(rates) else ""
            out.append(
                f"Not settled: {len(improving)} of {int(done['still_improving'].notna().sum())} runs "
                f"{'was' if len(improving) == 1 else 'were'} still improving at their end{largest}; more epochs would "
                "change the numbers below, and where a curve flattens may move."
            )
    keys = table.setting_keys
    groups = [((n if isinstance(n, tuple) else (n,)), g) for n, g in done.groupby(keys, dropna=False)] if keys else []
    metric = metric or headline_metric(table)
    x = x_key(table)
    if metric is not None and x is not None and metric in done.columns:
        label = table.info.label(metric)
        higher = bool(table.info.higher_is_better(metric))
        others = variant_keys(table, x)
        variants = (
            [((n if isinstance(n, tuple) else (n,)), g) for n, g in done.groupby(others, dropna=False)]
            if (others)
            else [((), done)]
        )
        counts: list[int] = []
        for name, group in sorted(variants, key=lambda v: tuple(order_key(k) for k in v[0])):
            points = []
            for value in sorted(group[x].dropna().unique(), key=order_key):
                seeds = pd.to_numeric(group.loc[group[x] == value, metric], errors="coerce").dropna().to_numpy()
                if len(seeds):
                    points.append((value, seeds))
                    counts.append(len(seeds))
            sentence = plateau_sentence(steps(points, higher), label, key_label(x))
            if sentence and others:
                sentence = ", ".join(f"{key_label(k)} {value_text(v)}" for k, v in zip(others, name)) + ": " + sentence
            if sentence:
                out.append(sentence)
        seeds = _seeds_sentence(counts)
        if seeds:
            out.append(seeds)
    gap = _gap_sentence(done, table, groups)
    if gap:
        out.append(gap)
    return out


def findings_markdown(sentences: list[str]) -> str:
    """The findings as a Markdown section (empty when there are none)."""
    if not sentences:
        return ""
    return (
        "\n**Findings** (computed from the table; docs/compare.md says how):\n\n"
        + "\n".join(f"- {s}" for s in sentences)
        + "\n"
    )

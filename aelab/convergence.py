"""Whether a run was still improving at its end: one rule, read off its monitored validation curve (no torch).

The rule (:data:`RULE`, its parameters recorded with every verdict):

* take the monitored validation metric (``model.monitor``) once per epoch, its direction from ``metric_info``;
* fit a straight line to its last ``window`` (10; all of them when fewer) values against the epoch, the values
  expressed in % of their mean level, and turn the slope into an *improvement rate* in % per epoch (positive: getting
  better);
* its standard error (from the scatter around the line: the curve's epoch-to-epoch noise) says how sure that rate is;
* **still improving** when the rate exceeds ``min_rate_pct`` (0.5 % per epoch) *and* ``min_t`` (2) standard errors;
  **getting worse** in the mirror case; otherwise a **plateau**;
* with fewer than ``min_epochs`` (3) validations nothing can show a plateau: such a run counts as still improving.

The training job records the verdict in ``metrics.json`` (``convergence``); for records written before it existed,
:func:`assess_run_folder` computes the same from the run's CSV log. Every reader (the end-of-run summary, the
sweep's table, ``aelab-compare``'s tables, figures, report and findings) shows :func:`describe`'s words.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Rule:
    """The parameters of the convergence rule (recorded with each verdict)."""

    window: int = 10  #: the last validations fitted (5 let one spike of a noisy curve read as a trend)
    min_epochs: int = 3  #: fewer validations than this: too few to show a plateau (counts as still improving)
    min_rate_pct: float = 0.5  #: an improvement rate (% of the level per epoch) below this is a plateau
    min_t: float = 2.0  #: ... and so is one within this many standard errors of zero


RULE = Rule()

#: the rule in one sentence (under every table and figure that shows a verdict)
RULE_TEXT = (
    f"a run is still improving when a line fitted to its monitored validation metric over its last {RULE.window} "
    f"epochs improves by more than {RULE.min_rate_pct:g} % per epoch and {RULE.min_t:g} standard errors; with fewer "
    f"than {RULE.min_epochs} epochs it counts as still improving"
)

IMPROVING, PLATEAU, WORSENING, TOO_SHORT = "still improving", "plateau", "getting worse", "too few epochs"


def assess(
    values: Sequence[float],
    metric: str,
    higher_is_better: bool = False,
    epochs: Sequence[float] | None = None,
    rule: Rule = RULE,
) -> dict[str, Any]:
    """The verdict on one run's curve ``values`` of ``metric`` (one per validation, in order; ``epochs`` their epochs,
    default 1, 2, ...): ``{metric, validations, window, rate_pct_per_epoch, rate_se_pct, noise_pct, verdict,
    still_improving, rule, curve}``."""
    pairs = [
        (float(e), float(v))
        for e, v in zip(epochs if epochs is not None else range(1, len(values) + 1), values)
        if v is not None and math.isfinite(float(v))
    ]
    sign = 1.0 if higher_is_better else -1.0
    out: dict[str, Any] = {
        "metric": metric,
        "higher_is_better": bool(higher_is_better),
        "validations": len(pairs),
        "window": min(rule.window, len(pairs)),
        "rate_pct_per_epoch": None,
        "rate_se_pct": None,
        "noise_pct": None,
        "rule": asdict(rule),
        "curve": [v for _, v in pairs],
    }
    tail = pairs[-rule.window :]
    level = sum(abs(v) for _, v in tail) / len(tail) if tail else 0.0
    if len(tail) >= 2 and level > 0:
        xs = [e for e, _ in tail]
        ys = [100.0 * v / level for _, v in tail]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx > 0:
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
            out["rate_pct_per_epoch"] = sign * slope
            if len(tail) > 2:
                residual = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, ys))
                out["noise_pct"] = math.sqrt(residual / (len(tail) - 2))
                out["rate_se_pct"] = out["noise_pct"] / math.sqrt(sxx)
    rate, se = out["rate_pct_per_epoch"], out["rate_se_pct"]
    if len(pairs) < rule.min_epochs or rate is None or se is None:
        verdict = TOO_SHORT
    elif rate > rule.min_rate_pct and rate > rule.min_t * se:
        verdict = IMPROVING
    elif rate < -rule.min_rate_pct and -rate > rule.min_t * se:
        verdict = WORSENING
    else:
        verdict = PLATEAU
    out["verdict"] = verdict
    out["still_improving"] = verdict in (IMPROVING, TOO_SHORT)
    return out


def describe(verdict: dict[str, Any] | None, short: bool = False) -> str:
    """A verdict in words: ``still improving at the end: 2.1 % per epoch (± 0.3, last 10 epochs)`` (``short``:
    ``still improving: 2.1 % per epoch``); ``""`` for none."""
    if not verdict:
        return ""
    rate, se, kind = verdict.get("rate_pct_per_epoch"), verdict.get("rate_se_pct"), verdict.get("verdict")
    n = verdict.get("validations", 0)
    if kind == TOO_SHORT:
        text = f"too few epochs to show a plateau ({n} validation{'s' if n != 1 else ''})"
        return "still improving? " + text if short else "counted as still improving: " + text
    what = "still improving" + ("" if short else " at the end") if kind == IMPROVING else kind
    if rate is None:
        return what
    if short:
        return f"{what}: {rate:+.1f} % per epoch" if kind != PLATEAU else f"{what} ({rate:+.1f} % per epoch)"
    spread = f" ± {se:.1f}" if se is not None else ""
    return f"{what}: {rate:+.1f}{spread} % per epoch over the last {verdict.get('window')} epochs"


# ------------------------------------------------------------------------------------------------ old records
def curve_from_csv(path: str | Path, metric: str) -> tuple[list[int], list[float]]:
    """The per-epoch values of ``metric`` in a run's CSV log (``csv/metrics.csv``): the last one logged in each
    epoch; epochs counted from 1. Empty lists when the file or the column is missing."""
    by_epoch: dict[int, float] = {}
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                epoch, value = row.get("epoch"), row.get(metric)
                if epoch in (None, "") or value in (None, ""):
                    continue
                try:
                    by_epoch[int(float(epoch))] = float(value)
                except ValueError:
                    continue
    except OSError:
        return [], []
    epochs = sorted(by_epoch)
    return [e + 1 for e in epochs], [by_epoch[e] for e in epochs]


def assess_run_folder(run_dir: str | Path, metric: str, higher_is_better: bool = False) -> dict[str, Any] | None:
    """The verdict from a run folder's CSV log (records written before ``convergence`` was recorded), or None when
    the folder has no curve of ``metric``."""
    epochs, values = curve_from_csv(Path(run_dir) / "csv" / "metrics.csv", metric)
    if not values:
        return None
    return assess(values, metric, higher_is_better, epochs)

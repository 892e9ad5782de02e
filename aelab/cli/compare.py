"""``aelab-compare``: tabulate and plot sweeps — one row per setting, mean ± std over seeds.

    aelab-compare outputs/sweeps/<sweep>                 # → <sweep>/comparison/
    aelab-compare outputs/sweeps/a outputs/sweeps/b --out outputs/comparisons/ab
    aelab-compare --wandb my-team/aelab --group <sweep>   # the same from W&B (needs network)
    aelab-compare --mlflow sqlite:///outputs/mlflow.db --experiment aelab --group <sweep>   # from MLflow

It writes the tables, the figures (PNG and PDF) and ``report.html``, one self-contained page of the whole
study (docs/compare.md). The work is :func:`aelab.analysis.compare.compare`.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from aelab.analysis.compare import compare
from aelab.errors import AelabError, ConfigError


def parse_references(items: list[str]) -> dict[str, tuple[float, str]]:
    """``METRIC=VALUE[:LABEL]`` items as ``{metric: (value, label)}``; a bad one is a :class:`ConfigError`."""
    out: dict[str, tuple[float, str]] = {}
    for item in items:
        metric, _, rest = item.partition("=")
        value, _, label = rest.partition(":")
        try:
            out[metric.strip()] = (float(value), label.strip() or f"published: {float(value):g}")
        except ValueError:
            raise ConfigError(
                f"--reference {item!r} is not METRIC=VALUE[:LABEL] (e.g. 'test/nll_iwae=235:reported')"
            ) from None
        if not metric.strip():
            raise ConfigError(f"--reference {item!r} names no metric (METRIC=VALUE[:LABEL])")
    return out


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``aelab-compare``."""
    parser = argparse.ArgumentParser(prog="aelab-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="sweep folders or run folders")
    parser.add_argument("--out", help="where to write (default: <sweep>/comparison)")
    parser.add_argument("--metrics", help="comma-separated metric columns and panels (default: those the runs declare)")
    parser.add_argument(
        "--curves", type=int, default=12, help="how many settings get learning curves (mean over their seeds)"
    )
    parser.add_argument(
        "--grid-images", type=int, default=10, help="test images in the reconstruction grid (0: no grid)"
    )
    parser.add_argument(
        "--bookkeeping",
        action="store_true",
        help="also tabulate and plot parameters and wall time (default: only the study's metrics)",
    )
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="METRIC=VALUE[:LABEL]",
        help="a published number drawn on METRIC's axes, e.g. 'test/nll_iwae=235:reported' (repeatable)",
    )
    parser.add_argument(
        "--wandb", metavar="ENTITY/PROJECT", help="read the runs from a W&B project instead (needs network)"
    )
    parser.add_argument(
        "--mlflow",
        metavar="TRACKING_URI",
        help="read the runs from an MLflow store instead (e.g. sqlite:///outputs/mlflow.db)",
    )
    parser.add_argument("--experiment", default="aelab", help="with --mlflow: the experiment (default: aelab)")
    parser.add_argument("--group", help="with --wandb or --mlflow: only this sweep (W&B group, MLflow sweep tag)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        references = parse_references(args.reference)
        result = compare(
            args.paths,
            args.out,
            args.metrics.split(",") if args.metrics else None,
            args.curves,
            args.grid_images,
            args.wandb,
            args.group,
            args.mlflow,
            args.experiment,
            bookkeeping=args.bookkeeping,
            references=references,
            command="aelab-compare " + shlex.join(sys.argv[1:] if argv is None else argv),
        )
    except AelabError as exc:
        print(f"aelab-compare: error: {exc}", file=sys.stderr)
        return 2
    counts = result.table.frame["status"].value_counts().to_dict()
    print(
        f"compared {len(result.table.frame)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}) → "
        f"{result.out_dir}"
    )
    if not result.summary.empty:
        print(open(result.files["comparison.md"]).read())
    for p in result.table.problems:
        print(f"  not included ({p['status']}): {p['run']}" + (f": {p['error']}" if p.get("error") else ""))
    print(f"report: {result.files['report.html']} (one page, opens offline) · {result.files['report.md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

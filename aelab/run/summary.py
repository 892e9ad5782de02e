"""What a run or a sweep tells its user at the end: a summary table on the terminal, also written to ``train.log``.

Everything shown is read from the run record (``metrics.json``): the status,
epochs and best epoch, the headline metrics the model and its evaluations
declared (their ``metric_info`` columns, with labels), wall time and
throughput, where the files are (run folder, newest reconstruction grid,
samples, the W&B run and how to upload it, the MLflow run and how to browse it) and the commands that come next.
A failed run shows its error, the file holding the traceback, and what was
kept. A sweep ends with a table of its jobs.
"""

from __future__ import annotations

import io
import shlex
from pathlib import Path

from aelab.store.record import RunRecord

SKIPPED_STEMS = ("train/", "train_eval/", "best/")


def _fmt(value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        a = abs(value)
        return f"{value:,.0f}" if a >= 1000 else f"{value:.4g}" if a >= 0.01 or a == 0 else f"{value:.3g}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = float(seconds)
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def headline(record: RunRecord) -> list[tuple[str, str, str]]:
    """``(key, label, value)`` of the metrics the run's producers declared as headline (table columns)."""
    info, final, best = record.metric_info, record.final, record.best
    rows = []
    for key in info.columns():
        if key in ("params", "wall_time_s"):
            continue
        value = best.get(key[len("best/") :]) if key.startswith("best/") else final.get(key)
        if isinstance(value, (int, float)):
            rows.append((key, info.label(key), _fmt(value)))
            spread = final.get(f"{key}_ci95") if key.startswith("gap/") else None
            if isinstance(spread, (int, float)):  # the gap's interval, right under it
                rows.append((f"{key}_ci95", info.label(f"{key}_ci95"), _fmt(spread)))
    return rows


def _wandb_lines(run_dir: Path) -> list[str]:
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    if folders:
        return [f"W&B (offline): {folders[-1]}", f"  upload it: wandb sync {folders[-1]}"]
    online = sorted((run_dir / "wandb").glob("run-*"))
    if online:
        return [f"W&B: {online[-1]} (synced online as it ran)"]
    return []


def _mlflow_lines(record: RunRecord) -> list[str]:
    tracked = record.get("mlflow") or {}
    if not tracked.get("run_id"):
        return []
    uri = tracked.get("tracking_uri", "")
    browse = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else uri
    return [f"MLflow: run {tracked['run_id']} in experiment {tracked.get('experiment')!r}", f"  browse: {browse}"]


def _command(record: RunRecord) -> str:
    overrides = [str(o) for o in record.get("overrides") or []]
    return "aelab-train " + " ".join(shlex.quote(o) for o in overrides)


def run_summary(record: RunRecord) -> tuple[object, str]:
    """The summary of one run: a rich renderable for the terminal and the same as plain text for ``train.log``."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    run_dir = Path(record.get("run_dir") or record.run_dir)
    status = record.status or "unknown"
    timing = record.get("timing") or {}
    lines: list[str] = []
    epochs = record.get("epochs")
    head = f"aelab-train: {status} in {_duration(record.get('wall_time_s'))}"
    if epochs is not None:
        head += f" — {epochs} epoch{'s' if epochs != 1 else ''}"
    if record.get("best_epoch") is not None:  # metrics.json keeps Lightning's 0-based index; people count from 1
        head += f", best epoch {int(record.get('best_epoch')) + 1}"
    if timing.get("train_images_per_s"):
        head += f", {timing['train_images_per_s']:,.0f} training images/s"
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("key", style="dim")
    rows = headline(record)
    for key, label, value in rows:
        table.add_row(label, value, key)
    if status != "completed":
        error = record.get("error") or "(no message)"
        lines.append(f"error: {error}")
        if (run_dir / "error.log").is_file():
            lines.append(f"traceback: {run_dir / 'error.log'}")
        last = run_dir / "checkpoints" / "last.ckpt"
        lines.append(
            f"kept: {last} (continue with the same command)"
            if last.is_file()
            else "kept: no checkpoint (no epoch finished)"
        )
    lines.append(f"run folder: {run_dir}")
    grids = sorted((run_dir / "samples").glob("recon_epoch=*.png"))
    if grids:
        lines.append(f"reconstructions: {grids[-1]}")
    samples = [
        p
        for p in (run_dir / "samples" / n for n in ("samples.png", "interpolation.png", "traversal.png"))
        if p.is_file()
    ]
    if samples:
        lines.append("generated: " + ", ".join(str(p) for p in samples))
    lines += _wandb_lines(run_dir) + _mlflow_lines(record)
    if status == "completed":
        lines.append(
            f"next: aelab-eval run={run_dir}   ·   aelab-compare {run_dir}   ·   aelab-predict run={run_dir} "
            f"input=<images>"
        )
    else:
        lines.append(f"continue: {_command(record)}")
    text_rows = [f"  {label}: {value}  ({key})" for key, label, value in rows]
    plain = "\n".join([head, *text_rows, *lines])
    parts = [
        Text(head, style="bold green" if status == "completed" else "bold red"),
        *([table] if rows else []),
        *[Text(text) for text in lines],
    ]
    renderable = Group(*parts)
    return renderable, plain


def print_run_summary(run_dir: Path, console_file=None) -> str:
    """Print the run's summary (rich, to stdout) and append it to its ``train.log``; returns the plain text."""
    from rich.console import Console

    record = RunRecord.read(run_dir)
    if record is None:
        return ""
    renderable, plain = run_summary(record)
    Console(file=console_file, soft_wrap=True).print(renderable)
    try:
        with open(Path(run_dir) / "train.log", "a") as fh:
            fh.write("\n" + plain + "\n")
    except OSError:
        pass
    return plain


def sweep_summary(sweep_dir: Path, jobs: list[dict], metric: str | None) -> tuple[object, str]:
    """A table of a sweep's jobs — the swept values, the objective, the status — and the command to compare them."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("job")
    table.add_column(metric or "objective", justify="right")
    table.add_column("status")
    lines = []
    for job in jobs:
        record = RunRecord.read(sweep_dir / job["job"])
        value = record.objective if record else None
        status = job.get("status") or (record.status if record else "missing")
        if job.get("skipped"):
            status += " (earlier)"
        table.add_row(job["job"], _fmt(value) if isinstance(value, (int, float)) else "–", status)
        lines.append(f"  {job['job']}: {_fmt(value) if isinstance(value, (int, float)) else '–'} {status}")
    tail = [f"compare: aelab-compare {sweep_dir}"]
    plain = "\n".join([f"sweep {sweep_dir}:", *lines, *tail])
    return Group(Text(f"sweep {sweep_dir}", style="bold"), table, *[Text(t) for t in tail]), plain


def render_plain(renderable) -> str:
    """A rich renderable as text (tests, logs)."""
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=200).print(renderable)
    return buffer.getvalue()

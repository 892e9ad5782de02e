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
import logging
import shlex
from pathlib import Path

from aelab.convergence import describe
from aelab.store.record import RunRecord

log = logging.getLogger("aelab.train")

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
        return [f"W&B (offline): {folders[-1]}", f"  upload it: wandb sync {shlex.quote(str(folders[-1]))}"]
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


def _progress(record: RunRecord) -> str:
    """``"3 epochs (60 optimizer steps, 15,360 images)"``: how much training the run had."""
    epochs, steps, images = record.get("epochs"), record.get("global_step"), record.get("images_seen")
    text = f"{epochs} epoch{'s' if epochs != 1 else ''}"
    if steps is not None:
        text += f" ({steps:,} optimizer step{'s' if steps != 1 else ''}" + (f", {images:,} images)" if images else ")")
    return text


def run_summary(record: RunRecord, repeats: bool = False, error_log: Path | None = None) -> tuple[object, str]:
    """The summary of one run: a rich renderable for the terminal and the same as plain text for ``train.log``.

    ``repeats``: the failure would happen again with the same command (a config error, a NaN, a broken file),
    so the summary does not suggest running it again unchanged. ``error_log``: the traceback written for this
    failure (none when the disk was full: an older ``error.log`` is not this failure's).
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    run_dir = Path(record.get("run_dir") or record.run_dir)
    status = record.status or "unknown"
    timing = record.get("timing") or {}
    lines: list[str] = []
    head = f"aelab-train: {status} in {_duration(record.get('wall_time_s'))}"
    if record.get("epochs") is not None:
        head += f" — {_progress(record)}"
    if record.get("best_epoch") is not None:  # metrics.json keeps Lightning's 0-based index; people count from 1
        head += f", best epoch {int(record.get('best_epoch')) + 1}"
    if timing.get("train_images_per_s"):
        head += f", {timing['train_images_per_s']:,.0f} training images/s"
    stopped = record.get("stopped_early")
    if stopped:
        lines.append(f"stopped early at epoch {stopped.get('epoch')}: {stopped.get('reason')}")
    verdict = record.convergence() if status == "completed" else None
    if verdict and verdict.get("still_improving"):  # the numbers above are not the run's last word
        lines.append(f"{describe(verdict)} ({verdict['metric']}): more epochs would change these numbers")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("key", style="dim")
    rows = headline(record)
    for key, label, value in rows:
        table.add_row(label, value, key)
    last = run_dir / "checkpoints" / "last.ckpt"
    if status != "completed":
        lines.append(f"error: {record.get('error') or '(no message)'}")
        if error_log is not None and Path(error_log).is_file():
            lines.append(f"traceback: {error_log}")
        others = sorted((run_dir / "checkpoints").glob("*.ckpt"))
        if last.is_file():
            lines.append(f"kept: {last}")
        else:
            best = f"kept: no last.ckpt ({others[-1].name} holds the best weights)" if others else None
            lines.append(best or "kept: no checkpoint (no epoch finished)")
    lines.append(f"run folder: {run_dir}")
    grids = sorted((run_dir / "samples").glob("recon_epoch=*.png"))
    if grids:
        lines.append(f"reconstructions: {grids[-1]}")
    names = ("samples.png", "interpolation.png", "traversal.png")
    samples = [p for p in (run_dir / "samples" / n for n in names) if p.is_file()]
    if samples:
        lines.append("generated: " + ", ".join(str(p) for p in samples))
    lines += _wandb_lines(run_dir) + _mlflow_lines(record)
    if status == "completed":
        run = shlex.quote(f"run={run_dir}")  # a shell word; the entry points quote the path for Hydra themselves
        lines.append(
            f"next: aelab-eval {run}   ·   aelab-compare {shlex.quote(str(run_dir))}   ·   "
            f"aelab-predict {run} input=<images>"
        )
    elif repeats:
        lines.append("next: the same command would stop the same way — change what the error names first")
    else:
        lines.append(f"continue: {_command(record)}" + (" (it resumes from last.ckpt)" if last.is_file() else ""))
    text_rows = [f"  {label}: {value}  ({key})" for key, label, value in rows]
    plain = "\n".join([head, *text_rows, *lines])
    parts = [
        Text(head, style="bold green" if status == "completed" else "bold red"),
        *([table] if rows else []),
        *[Text(text) for text in lines],
    ]
    return Group(*parts), plain


def print_run_summary(job, multirun: bool, repeats: bool = False, console_file=None) -> str:
    """The end-of-run summary of a single run (rank 0): printed (unless ``verbose=false``) and appended to
    ``train.log``.

    A sweep ends with a table of its jobs instead. Returns the plain text.
    """
    from rich.console import Console

    from aelab.store.locks import is_extra_rank

    if multirun or is_extra_rank():
        return ""
    try:
        record, memory = RunRecord.read(job.run_dir), job.record
        on_disk = (record.status, record.get("error")) if record is not None else None
        if memory.data and on_disk != (memory.status, memory.get("error")):
            record = memory  # the disk did not take the last record (a full disk): what the run knows
        if record is None:
            return ""
        renderable, plain = run_summary(record, repeats, getattr(job, "error_log", None))
        if job.cfg.get("verbose", True):
            Console(file=console_file, soft_wrap=True).print(renderable)
    except Exception as exc:  # noqa: BLE001 — a summary must never turn a finished run into a failure
        log.warning("no summary: %s", exc)
        return ""
    try:
        from aelab.store.files import open_in_place

        with open_in_place(Path(job.run_dir) / "train.log", "a") as fh:
            fh.write("\n" + plain + "\n")
    except OSError as exc:
        log.warning("the summary was not added to %s: %s", Path(job.run_dir) / "train.log", exc.strerror or str(exc))
    return plain


def sweep_summary(sweep_dir: Path, jobs: list[dict], metric: str | None) -> tuple[object, str]:
    """A table of a sweep's jobs — the swept values (in numeric order), the objective, training done, whether it was
    still improving at its end (:mod:`aelab.convergence`), the status."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from aelab.store.runs import natural_key

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    columns = (("job", "left"), (metric or "objective", "right"), ("steps", "right"), ("at the end", "left"))
    for column, justify in (*columns, ("status", "left")):
        table.add_column(column, justify=justify)
    lines, improving = [], 0
    for job in sorted(jobs, key=lambda j: natural_key(j["job"])):
        record = RunRecord.read(sweep_dir / job["job"])
        value = record.objective if record else None
        shown = _fmt(value) if isinstance(value, (int, float)) else "–"
        steps = f"{record.get('global_step'):,}" if record and record.get("global_step") is not None else "–"
        status = (job.get("status") or (record.status if record else "missing")) + (
            " (earlier)" if job.get("skipped") else ""
        )
        verdict = record.convergence() if record and record.status == "completed" else None
        end = describe(verdict, short=True)
        improving += bool(verdict and verdict.get("still_improving"))
        table.add_row(job["job"], shown, steps, end, status)
        lines.append(f"  {job['job']}: {shown} {steps} steps" + (f" ({end})" if end else "") + f" {status}")
    tail = [f"compare: aelab-compare {sweep_dir}"]
    if improving:
        tail.insert(
            0,
            f"{improving} of {len(jobs)} jobs were still improving at their end: more epochs would change "
            "their numbers",
        )
    plain = "\n".join([f"sweep {sweep_dir}:", *lines, *tail])
    return Group(Text(f"sweep {sweep_dir}", style="bold"), table, *[Text(t) for t in tail]), plain


def print_sweep_summary(sweep_dir: Path, groups: dict[str, list[dict]], metric: str | None) -> None:
    """The end of a sweep: the counts and the failures in the log, then the table of its jobs."""
    from rich.console import Console

    counts = {k: len(v) for k, v in groups.items()}
    lines = [
        f"sweep {sweep_dir}: {counts['completed']} done, {counts['failed']} failed, {counts['skipped']} skipped "
        "(completed earlier)"
        + (f", {counts['pruned']} pruned" if counts["pruned"] else "")
        + (f", {counts['missing']} without metrics.json" if counts["missing"] else "")
    ]
    lines += [f"  failed: {e['job']}: {e.get('error')}" for e in groups["failed"]]
    lines += [f"  missing: {e['job']}: {e['reason']}" for e in groups["missing"]]
    lines += [f"  earlier: {e['job']}: {e['error']}" for e in groups["stale"]]
    log.info("\n".join(lines))
    kinds = ("completed", "skipped", "pruned", "failed", "stale")
    jobs = [{**j, "skipped": kind == "skipped"} for kind in kinds for j in groups[kind]]
    jobs += [{"job": j["job"], "status": "missing"} for j in groups["missing"]]
    renderable, _ = sweep_summary(sweep_dir, jobs, metric)
    Console(soft_wrap=True).print(renderable)


def render_plain(renderable) -> str:
    """A rich renderable as text (tests, logs)."""
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=200).print(renderable)
    return buffer.getvalue()

"""What a run's record says, read off the running job: ``metrics.json`` at each state, and a failure kept.

:func:`record_fields` fills :class:`aelab.store.record.RecordData` from the job's parts (trainer,
model, data, callbacks, evaluations); :func:`write_record` writes it; :func:`recorded` is the
one wrapper around a job that turns an exception into a ``failed`` or ``interrupted`` record
(with ``error.log``), finishes the loggers, prints the summary and says what to do next.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from aelab.errors import NonFiniteLossError, find_aelab_error
from aelab.run import threads
from aelab.store.record import RecordData, now_iso

if TYPE_CHECKING:
    from aelab.run.job import Job

log = logging.getLogger("aelab.train")


def record_fields(job: Job, status: str, error: str | None = None, error_type: str | None = None) -> RecordData:
    """What the run record holds for ``job`` in state ``status``."""
    from aelab.run.extensions import packages_of
    from aelab.store.fingerprint import fingerprint

    cfg, history, trainer, model, info = job.cfg, job.history, job.trainer, job.model, job.info
    best = history.best(info) if history and info else {}
    final = dict(sorted((history.final if history else {}).items()))
    if job.evaluation is not None:
        final.update({k: v for k, v in job.evaluation.metrics.items() if isinstance(v, (int, float))})
    monitor = str(cfg.model.get("monitor", "val/recon_loss"))
    metric = str(cfg.get("optimized_metric") or monitor)
    higher = info.higher_is_better(monitor) if info is not None else None
    higher = cfg.model.get("monitor_mode", "min") == "max" if higher is None else higher
    finished = time.time()
    last = job.run_dir / "checkpoints" / "last.ckpt"
    steps = trainer.global_step if trainer is not None else 0
    return RecordData(
        status=status,
        error=error,
        error_type=error_type,
        run_dir=str(job.run_dir),
        **{group: job.choices.get(group) for group in ("model", "data", "noise", "experiment")},
        bottleneck=cfg.model.get("bottleneck"),
        params=model.num_parameters() if model is not None else None,
        seed=cfg.get("seed"),
        epochs=trainer.current_epoch if trainer is not None else 0,
        global_step=steps,
        images_seen=steps * int(cfg.data.get("batch_size") or 0) * (trainer.world_size if trainer is not None else 1),
        wall_time_s=round(finished - job.started, 3),
        started_at=job.started_at,
        finished_at=now_iso() if status != "running" else None,
        finished_at_unix=finished if status != "running" else None,
        final=final,
        best=best,
        best_epoch=history.best_epoch(monitor, higher) if history else None,
        convergence=history.convergence(monitor, higher) if history else None,
        stopped_early=stopped_early(trainer),
        objective={"metric": metric, "value": best.get(metric, final.get(metric))},
        checkpoints={
            "best": (job.checkpoint.best_model_path or None) if job.checkpoint is not None else None,
            "last": str(last) if last.is_file() else None,
        },
        dataset=job.datamodule.describe() if job.datamodule is not None else None,
        dataset_info=job.datamodule.info() if job.datamodule is not None and job.datamodule.splits else None,
        resumed_from=str(job.resume_from) if job.resume_from is not None else None,
        config_fingerprint=fingerprint(job.plain_config()),
        wandb=job.tracked.get("wandb"),
        mlflow=job.tracked.get("mlflow"),
        world_size=trainer.world_size if trainer is not None else None,
        **(model.summary_extras() if model is not None else {}),
        overrides=job.overrides,
        search_path=job.search_path,
        extension_packages=packages_of(job.plain_config()),
        metric_info=info.to_json() if info is not None else {},
        timing=timings(job, finished),
    )


def stopped_early(trainer) -> dict[str, Any] | None:
    """``{"epoch", "reason"}`` when Lightning's EarlyStopping ended training (epoch counted from 1), else None."""
    from lightning.pytorch.callbacks import EarlyStopping

    for callback in trainer.callbacks if trainer is not None else []:
        if not isinstance(callback, EarlyStopping):
            continue
        reason = getattr(callback, "stopping_reason_message", None)  # (Lightning ≥ 2.6; before: stopped_epoch alone)
        if reason is not None or int(getattr(callback, "stopped_epoch", 0)) > 0:
            reason = reason or f"no improvement of {callback.monitor}"
            return {"epoch": int(callback.stopped_epoch) + 1, "reason": reason}
    return None


def timings(job: Job, now: float) -> dict[str, Any]:
    """Where the wall time went: start-up to the first batch (the libraries' imports named), training, the end."""
    clock, t = job.clock, dict(job.timing)
    if clock is not None and clock.first_batch_at is not None:
        t["startup_s"] = round(clock.first_batch_at - t["process_start"], 3)
        t["training_s"] = round((clock.fit_end_at or now) - clock.first_batch_at, 3)
        if clock.fit_end_at is not None:
            t["after_fit_s"] = round(now - clock.fit_end_at, 3)
            t["training_cpu_s"] = round(clock.fit_end_cpu - clock.first_batch_cpu, 3)  # (CPU time: see Timing)
        if clock.train_seconds > 0:
            t["train_images_per_s"] = round(clock.images / clock.train_seconds, 1)
        t["first_batch_at"], t["fit_end_at"] = clock.first_batch_at, clock.fit_end_at
    if threads.current is not None and threads.current.used:
        t["threads"] = threads.current.used  # the CPU threads it ran with, in order (they follow the machine's load)
    return t


def write_record(job: Job, status: str, error: str | None = None, error_type: str | None = None) -> RecordData:
    """Update the run's record and write ``metrics.json`` (atomically, rank 0 only); returns its content."""
    if job.trainer is None or job.trainer.is_global_zero:
        job.record.update(**record_fields(job, status, error, error_type)).save()
    return job.record.data


def write_job_files(job: Job) -> None:
    """The run's ``.hydra/`` files — the config it trains with, Hydra's config, the overrides — written by the run
    itself.

    Hydra's own copy is switched off (``hydra.output_subdir: null``) so that a refused or skipped invocation never
    rewrites a run's record of its config: only a run that goes on to train writes them.
    """
    from hydra.core.hydra_config import HydraConfig

    from aelab.store.files import write_text_atomic

    folder = job.run_dir / ".hydra"
    write_text_atomic(folder / "config.yaml", OmegaConf.to_yaml(job.cfg))
    write_text_atomic(folder / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(job.overrides)))
    if HydraConfig.initialized():
        write_text_atomic(folder / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": HydraConfig.get()})))


def _message(exc: BaseException) -> str:
    err = find_aelab_error(exc)
    return str(err) if err is not None else (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _why(exc: BaseException) -> str:
    """A write's failure in a few words: a full disk's ``strerror``, else its message."""
    import os

    from aelab.store.files import no_space

    full = no_space(exc)
    return os.strerror(full.errno).lower() if full is not None else _message(exc)


def _record_failure(job: Job, exc: BaseException, status: str) -> str:
    """Record ``status`` and the reason in ``metrics.json``, the traceback in ``error.log``; returns the message.

    The record in memory says it even when the disk cannot (a full disk): the summary reads it from there, and
    points at ``error.log`` only when this sitting wrote it (:attr:`Job.error_log`).
    """
    from aelab.store.files import write_text_atomic
    from aelab.tracking import finish_loggers

    message = _message(exc)
    error_type = type(find_aelab_error(exc) or exc).__name__
    earlier = job.record.status
    unwritten = []
    try:
        write_text_atomic(job.run_dir / "error.log", "".join(traceback.format_exception(exc)))
        job.error_log = job.run_dir / "error.log"
    except Exception as write_exc:  # noqa: BLE001 — never hide the original error
        unwritten.append(f"error.log ({_why(write_exc)})")
    try:
        write_record(job, status, error=message, error_type=error_type)
    except Exception as write_exc:  # noqa: BLE001
        job.record.update(status=status, error=message, error_type=error_type)
        unwritten.append(f"metrics.json ({_why(write_exc)}; it still says {earlier or 'nothing'})")
    if unwritten:
        log.warning("could not write %s in %s", " nor ".join(unwritten), job.run_dir)
    finish_loggers(job.loggers, {"status": status, "error": message}, exit_code=1)
    return message


def _repeats(exc: BaseException) -> bool:
    """Whether running the same command again would meet the same failure (a config error, a NaN, a broken file)."""
    from aelab.errors import ConfigError, DataFileError, RunFolderError, TrustError

    repeating = (ConfigError, NonFiniteLossError, DataFileError, RunFolderError, TrustError)
    return isinstance(find_aelab_error(exc), repeating)


@contextmanager
def recorded(job: Job, multirun: bool, cli: bool) -> Iterator[None]:
    """Run the job's body; an exception becomes a ``failed``/``interrupted`` record, a summary and a clear exit.

    In a sweep a failed job is recorded and the sweep goes on; a single run from the command line
    exits with the one-line message (its traceback is in ``error.log``); the Python API re-raises.
    """
    from aelab.run.summary import print_run_summary

    try:
        yield
    except (KeyboardInterrupt, SystemExit) as exc:
        ctrl_c = getattr(job, "ctrl_c", None) is not None and job.ctrl_c.presses > 0
        _record_failure(job, KeyboardInterrupt("stopped by Ctrl-C") if ctrl_c else exc, "interrupted")
        print_run_summary(job, multirun)
        print(
            f"aelab-train: interrupted ({'Ctrl-C' if ctrl_c else type(exc).__name__}); what was written is kept in "
            f"{job.run_dir}; run the same command again to continue from checkpoints/last.ckpt",
            file=sys.stderr,
        )
        if ctrl_c:
            raise SystemExit(128 + 2) from None  # the shell's code for SIGINT (Lightning exits 1 after a Ctrl-C)
        if type(exc).__name__ == "SIGTERMException":
            raise SystemExit(128 + 15) from None  # Lightning's SIGTERM exit carries no status; report the signal
        raise
    except Exception as caught:
        exc = disk_full(caught, job.run_dir) or caught
        message = _record_failure(job, exc, "failed")
        print_run_summary(job, multirun, repeats=_repeats(exc))
        if multirun:
            where = f" (traceback in {job.error_log})" if job.error_log is not None else ""
            log.error("job %s failed: %s%s", job.run_dir.name, message, where)
            return
        if cli and find_aelab_error(exc) is not None:
            raise SystemExit(f"aelab-train: error: {message}\n(run folder: {job.run_dir})") from None
        if exc is caught:
            raise
        raise exc from caught
    print_run_summary(job, multirun)


def disk_full(exc: BaseException, run_dir: Path):
    """A :class:`aelab.errors.DiskFullError` naming the file when ``exc`` is a full disk that no aelab writer has
    named yet (a library's own write: Lightning's, PIL's), else None."""
    from aelab.store.files import disk_full_error, no_space, written_file

    full = no_space(exc)
    if full is None or find_aelab_error(exc) is not None:
        return None
    return disk_full_error(written_file(full) or run_dir, full)


def failed_before_start(run_dir: Path, exc: BaseException) -> None:
    """A sweep job refused by its own pre-run step: record ``failed`` in a folder that holds no earlier record."""
    from aelab.store.files import write_json_atomic
    from aelab.store.record import METRICS_FILE

    if (run_dir / METRICS_FILE).exists():  # an earlier sitting's record is never overwritten by a refusal
        log.error("job %s not run: %s", run_dir.name, _message(exc))
        return
    data = {
        "status": "failed",
        "error": _message(exc),
        "error_type": type(find_aelab_error(exc) or exc).__name__,
        "run_dir": str(run_dir),
        "finished_at": now_iso(),
        "finished_at_unix": time.time(),
    }
    write_json_atomic(run_dir / METRICS_FILE, data)
    log.error("job %s failed before it started: %s", run_dir.name, data["error"])

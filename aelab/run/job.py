"""One training run, top to bottom: callbacks, loggers, Trainer → fit → test → evaluations → ``metrics.json``.

:func:`run_job` is the Hydra task of ``aelab-train`` and of :func:`aelab.train`. The pre-run step
(:mod:`aelab.run.precheck`) has already refused bad input and built the data, corruption and model;
failures are recorded by one wrapper (:func:`aelab.run.recording.recorded`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aelab.run import precheck, threads
from aelab.run.recording import failed_before_start, recorded, write_job_files, write_record
from aelab.run.session import (
    CtrlC,
    hydra_choices,
    is_multirun,
    job_running,
    own_wandb_service,
    search_path,
    task_overrides,
    watch_launcher,
)
from aelab.store.locks import is_extra_rank, release_folder
from aelab.store.record import RunRecord, now_iso

log = logging.getLogger("aelab.train")


class Job:
    """One run's parts as they come to exist, so that a failure at any point is recorded with what was known."""

    def __init__(self, cfg: DictConfig, prepared: precheck.Prepared):
        self.cfg, self.run_dir, self.timing = cfg, prepared.run_dir, prepared.timing
        self.datamodule, self.model = prepared.parts.datamodule, prepared.parts.model
        self.noise, self.resume_from = prepared.parts.noise, prepared.resume_from
        self.record, self.choices = RunRecord.read(self.run_dir) or RunRecord(self.run_dir), hydra_choices()
        self.record.run_dir = self.run_dir  # a moved folder records where it is now
        self.started = self.timing.get("prepare_start", time.time())  # the run's wall time includes building its parts
        self.started_at = now_iso()
        self.trainer = self.history = self.checkpoint = self.evaluation = self.info = self.clock = self.pruning = None
        self.ctrl_c: CtrlC | None = None  # Ctrl-C during fit: stop at the next step boundary
        self.error_log: Path | None = None  # the traceback this sitting wrote (not one a full disk refused)
        self.loggers, self.tasks, self.tracked = [], {}, {}
        self.overrides, self.search_path = task_overrides(), search_path()
        adopted = prepared.adopted.get("data.split_seed") if prepared.adopted else None
        if adopted is not None and not isinstance(adopted, str):  # an old run's split, fixed to its recorded seed
            self.record.update(split_seed_adopted=adopted)
        if prepared.changes:  # on_config_change=continue: the record says what changed, and when
            at = {"at_step": prepared.resume_step, "at": self.started_at}
            changed = [{**at, "key": k, "before": b, "after": a} for k, b, a in prepared.changes]
            self.record.update(config_changes=[*(self.record.get("config_changes") or []), *changed])

    def plain_config(self) -> dict:
        return OmegaConf.to_container(self.cfg, resolve=False)

    def assemble(self) -> None:
        """The job files, evaluation tasks, callbacks, loggers and Trainer around the prepared parts."""
        from hydra.utils import instantiate

        from aelab.run import parts
        from aelab.tracking import start_loggers

        cfg = self.cfg
        if not is_extra_rank():
            write_job_files(self)
        self.tasks = parts.instantiate_group(cfg.get("eval"))  # checked now, run after testing
        callbacks = parts.callbacks(self)
        self.info = parts.metric_catalog(self.model, self.tasks)
        self.loggers = list(parts.instantiate_group(cfg.get("logger"), **parts.logger_arguments(self)).values())
        options = parts.trainer_options(cfg, callbacks)
        self.trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=self.loggers or False, **options)
        if self.trainer.is_global_zero:
            self.loggers, self.tracked = start_loggers(self.loggers, parts.loggable(self), self.info.summaries())
            self.trainer.loggers = self.loggers
        parts.describe(self)

    def train(self) -> None:
        """Assemble, fit, test, evaluate, and record each state."""
        from aelab.tracking import finish_loggers

        cfg = self.cfg
        self.assemble()
        write_record(self, "running")
        ckpt = str(self.resume_from) if self.resume_from else None
        with CtrlC(self.trainer) as self.ctrl_c:
            self.trainer.fit(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
        if self.trainer.interrupted:
            raise KeyboardInterrupt("training was interrupted")
        if (
            self.pruning is not None and self.pruning.pruned is not None
        ):  # stopped by the search: no test, no evaluation
            finish_loggers(self.loggers, write_record(self, "pruned", error=self.pruning.reason), exit_code=0)
            return
        if cfg.test:
            best = cfg.test_ckpt == "best" and self.checkpoint is not None and bool(self.checkpoint.best_model_path)
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if best else None, verbose=False)
        if self.tasks and self.trainer.is_global_zero:
            self.evaluate()
        finish_loggers(self.loggers, write_record(self, "completed"), exit_code=0)

    def evaluate(self) -> None:
        """The selected evaluations on the tested weights, into the record and the loggers."""
        from aelab.evaluation.task import run_tasks
        from aelab.run.load import LoadedRun
        from aelab.tracking import publish_evaluation

        best = self.checkpoint.best_model_path if self.checkpoint is not None else ""
        run = LoadedRun(self.run_dir, self.cfg, self.model.eval(), self.datamodule, Path(best) if best else None)
        self.evaluation = run_tasks(run, self.tasks)
        ev = self.evaluation
        self.record.add_evaluation(ev.metrics, ev.details, ev.files, best or None)
        publish_evaluation(self.loggers, ev.metrics, ev.images, self.trainer.global_step)


def run_job(cfg: DictConfig, cli: bool = True) -> float | None:
    """The Hydra task: prepare (unless the Hydra callback did), skip a completed run, train, record; the objective.

    ``cli=False`` (the Python API) raises a failed run's error instead of exiting with its message.
    """
    own_wandb_service()
    multirun, run_dir = is_multirun(), Path(str(cfg.paths.run_dir))
    try:
        prepared = precheck.take(run_dir) or precheck.prepare_here(cfg, run_dir)
    except precheck.Refused as refused:
        if not multirun:
            if not cli:
                raise refused.error from None  # the Python API raises the error itself
            raise
        failed_before_start(run_dir, refused.error)  # a sweep goes on with its other jobs
        threads.leave()
        release_folder(run_dir)
        return None
    try:
        if prepared.skip is not None:
            detach_file_logs(run_dir)  # a skipped invocation adds nothing to the run's train.log
            log.info(
                "skipping %s: completed earlier with this config (delete the folder to train it again)", run_dir.name
            )
            return prepared.skip.objective
        precheck.apply_adopted(cfg, prepared.adopted)  # a run folder older than a key: its recorded value
        quiet_full_log(run_dir)
        job = Job(cfg, prepared)
        watch_launcher()  # a joblib worker stops its job when the launcher dies
        job_running.set()
        with recorded(job, multirun, cli):
            job.train()
        return job.record.objective
    finally:
        job_running.clear()
        threads.leave()  # its cores go back to the other jobs
        release_folder(run_dir)


def detach_file_logs(folder: Path) -> None:
    """Close and remove the logging file handlers (Hydra's ``train.log``) that write into ``folder``."""
    for logger, handler in _file_handlers(folder):
        logger.removeHandler(handler)
        handler.close()


def _file_handlers(folder: Path) -> list:
    """The logging file handlers (Hydra's ``train.log``) that write into ``folder``, with their loggers."""
    import logging

    root = Path(folder).resolve()
    found = []
    for logger in [
        logging.getLogger(),
        *[lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)],
    ]:
        for handler in list(logger.handlers):
            name = getattr(handler, "baseFilename", None)
            if name and root in Path(name).resolve().parents:
                found.append((logger, handler))
    return found


def quiet_full_log(folder: Path) -> None:
    """A log file in ``folder`` on a full disk stops logging to the file with one warning, instead of printing
    logging's "--- Logging error ---" traceback at every line (the terminal still gets every line)."""
    import sys

    from aelab.store.files import no_space

    for logger, handler in _file_handlers(folder):
        if getattr(handler, "aelab_quiet", False):
            continue

        def handle_error(record, handler=handler, logger=logger, earlier=handler.handleError):
            if no_space(sys.exc_info()[1]) is None:
                return earlier(record)
            logger.removeHandler(handler)
            log.warning("no space left on device while writing %s: it is not written to any more", handler.baseFilename)
            return None

        handler.handleError = handle_error
        handler.aelab_quiet = True

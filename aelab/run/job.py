"""``aelab-train``: train, test, evaluate and record one autoencoder run (or a Hydra sweep of them).

    aelab-train model=mlp model.bottleneck=8
    aelab-train -m model=mlp,conv model.bottleneck=2,4,8,16
    aelab-train data.normal_class=3 eval=[anomaly]

One job: build the parts from the config (:mod:`aelab.run.build`) → fit → test →
the selected evaluations (:mod:`aelab.evaluation`) → the run record
(``metrics.json``, :class:`~aelab.store.record.RunRecord`). In a sweep, a job whose
folder already holds a completed record is skipped, and a job that fails is
recorded without stopping the others.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from aelab.config.checks import accelerator_problem, config_problems, local_ddp_sweep_problem
from aelab.errors import ConfigError, find_aelab_error
from aelab.run.session import (
    CtrlC,
    configure_threads,
    hydra_choices,
    is_multirun,
    job_running,
    loggable_config,
    own_wandb_service,
    process_started_at,
    quiet_known_warnings,
    stop_with_parent,
    sweep_name,
)
from aelab.store.files import remove_temporaries
from aelab.store.locks import FolderInUse, is_extra_rank, lock_folder, release_folder
from aelab.store.record import RECORD_METRICS, RunRecord, now_iso

log = logging.getLogger("aelab.train")


# ------------------------------------------------------------------ one job
class TrainingJob:
    """One run: build the parts, fit, test, evaluate, record. Attributes fill in as it goes, so a failure
    at any point is recorded with what was known."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.run_dir = Path(str(cfg.paths.run_dir))
        self.record = RunRecord(self.run_dir)
        self.choices = hydra_choices()
        self.started, self.started_at = time.time(), now_iso()
        self.timing: dict = {
            "process_start": process_started_at(),
            "pid": os.getpid(),
        }  # a joblib worker runs several jobs
        self.clock = None
        self.datamodule = self.model = self.trainer = self.history = self.checkpoint = self.evaluation = self.info = (
            None
        )
        self.loggers: list = []
        self.tasks: dict = {}
        self.resume_from: Path | None = None
        self.tracked: dict = {}  # the W&B and MLflow runs this run logs to (kept in the record)
        self.pruning = None  # OptunaPruning, in a job of an Optuna search
        self.ctrl_c: CtrlC | None = None  # Ctrl-C during fit: stop at the next step boundary

    def build(self) -> None:
        """Instantiate every part; config errors surface here, before any training."""
        imports = time.time()
        import lightning as L
        import torch  # noqa: F401 — timed: the libraries' share of the start-up

        from aelab.run.build import EARLY_IMPORT_SECONDS

        self.timing["imports_s"] = round(time.time() - imports + sum(EARLY_IMPORT_SECONDS.values()), 3)

        from aelab.callbacks import MetricsHistory, StepSeeding, Timing
        from aelab.metric_info import MetricCatalog
        from aelab.run.build import build_components, instantiate_group
        from aelab.store.checkpoints import resume_checkpoint
        from aelab.tracking import start_loggers

        cfg = self.cfg
        quiet_known_warnings()
        threads = configure_threads(cfg)
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        parts = build_components(cfg, before_model=self.check_size)
        self.datamodule, self.model = parts.datamodule, parts.model
        self.model.nonfinite_loss = str(cfg.nonfinite_loss)
        # training batches per Lightning call: the loader's chunks, and the model's messages
        self.datamodule.steps_per_call = self.model.steps_per_call = int(cfg.get("steps_per_call") or 1)
        if cfg.get("compile"):
            for net in (self.model.encoder, self.model.decoder):  # in place: parameter names (and checkpoints) stay
                net.compile()
        self.tasks = instantiate_group(cfg.get("eval"))  # checked now, run after testing
        self.resume_from = resume_checkpoint(self.run_dir, cfg.get("ckpt_path"), str(cfg.resume))
        self.datamodule.prepare_data()
        self.datamodule.setup("fit")
        callbacks = list(instantiate_group(cfg.get("callbacks")).values())
        self.history = next((c for c in callbacks if isinstance(c, MetricsHistory)), None) or MetricsHistory()
        self.clock = Timing()
        callbacks += [
            c
            for c in (self.history, StepSeeding(int(cfg.seed)), self.clock)
            if not any(type(c) is type(d) for d in callbacks)
        ]
        search = cfg.get("search") or {}
        if search.get("trial") is not None:  # a job of an Optuna search: report every epoch, stop when pruned
            from aelab.callbacks.pruning import OptunaPruning, make_pruner

            self.pruning = OptunaPruning(
                str(search.storage),
                str(search.study),
                int(search.trial),
                str(cfg.model.monitor),
                make_pruner(search),
                str(cfg.model.get("monitor_mode", "min")),
            )
            callbacks.append(self.pruning)
        self.checkpoint = next((c for c in callbacks if type(c).__name__ == "ModelCheckpoint" and c.monitor), None)
        self.info = MetricCatalog(self.model.metric_info())
        for task in self.tasks.values():
            self.info.add(task.metric_info())
        self.info.add(RECORD_METRICS)
        self.loggers = list(instantiate_group(cfg.get("logger"), **self.logger_arguments()).values())
        self.trainer = instantiate_trainer(cfg.trainer, callbacks, self.loggers)
        if self.trainer.is_global_zero:
            params = {
                **loggable_config(cfg, self.choices),
                "params": self.model.num_parameters(),
                "metric_info": self.info.to_json(),
                "dataset_info": self.datamodule.info(),
            }
            self.loggers, self.tracked = start_loggers(self.loggers, params, self.info.summaries())
            self.trainer.loggers = self.loggers
        log.info(
            "run folder: %s%s", self.run_dir, f" (continuing from {self.resume_from.name})" if self.resume_from else ""
        )
        log.info("data: %s", self.datamodule.describe())
        log.info(
            "model: %s, bottleneck %s, %s parameters, noise %s, %d CPU threads",
            self.choices.get("model", type(self.model).__name__),
            cfg.model.get("bottleneck"),
            f"{self.model.num_parameters():,}",
            parts.noise.describe(),
            threads,
        )
        self.warn_identity(parts.noise)

    def check_size(self, datamodule) -> None:
        """Refuse a model whose training or checkpoints would not fit, before its memory is allocated.

        A single run was checked before its folder existed (``prepare_run_dir``); a sweep job is checked here,
        on the machine that runs it."""
        if not is_multirun():
            return
        from aelab.run.build import model_size_problem

        problem = model_size_problem(self.cfg, self.run_dir)
        if problem:
            raise ConfigError(problem)

    def logger_arguments(self) -> dict[str, dict[str, Any]]:
        """What the loggers learn from the run: the sweep (W&B group, MLflow tag) and, when a run continues, its tracked
        runs' ids.
        """
        from aelab.store.runs import wandb_run_id

        loggers, extra = self.cfg.get("logger") or {}, {}
        previous = RunRecord.read(self.run_dir) if self.resume_from is not None else None
        if loggers.get("wandb") is not None:
            # the W&B group: the configured one, the sweep folder's name, or the id of the W&B sweep whose agent started
            # the run
            extra["wandb"] = {"group": loggers.wandb.get("group") or sweep_name() or os.environ.get("WANDB_SWEEP_ID")}
            if self.resume_from is not None and wandb_run_id(self.run_dir):  # the same W&B run continues
                extra["wandb"]["id"] = wandb_run_id(self.run_dir)
        if loggers.get("mlflow") is not None:
            extra["mlflow"] = {"sweep": sweep_name(), "save_dir": str(self.run_dir)}
            if previous is not None and previous.mlflow_id:  # the same MLflow run continues
                extra["mlflow"]["run_id"] = previous.mlflow_id
        return extra

    def warn_identity(self, noise) -> None:
        """A bottleneck that does not compress (without a penalty or a corruption) can learn the identity."""
        size = 1
        for s in self.datamodule.dims:
            size *= int(s)
        bottleneck = self.cfg.model.get("bottleneck")
        regularised = self.cfg.model.get("sparse") or self.cfg.model.get("contractive") or noise.name != "none"
        if isinstance(bottleneck, int) and bottleneck >= size and not regularised:
            log.warning(
                "model.bottleneck=%d is not smaller than the input (%d values per image): without a "
                "sparsity/contractive penalty or a corruption the autoencoder can learn the identity",
                bottleneck,
                size,
            )

    def run(self) -> dict:
        """Build, fit, test, evaluate and record; returns the record's content."""
        self.build()
        if self.trainer.is_global_zero:
            self.write("running")
        with CtrlC(self.trainer) as self.ctrl_c:
            self.trainer.fit(
                self.model, datamodule=self.datamodule, ckpt_path=str(self.resume_from) if self.resume_from else None
            )
        if self.trainer.interrupted:
            raise KeyboardInterrupt("training was interrupted")
        if (
            self.pruning is not None and self.pruning.pruned is not None
        ):  # stopped by the search: no test, no evaluation
            data = self.write("pruned", error=self.pruning.reason) if self.trainer.is_global_zero else {}
            self.finish_loggers(data, exit_code=0)
            return data
        if self.cfg.test:
            best = (
                self.cfg.test_ckpt == "best" and self.checkpoint is not None and bool(self.checkpoint.best_model_path)
            )
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if best else None, verbose=False)
        if self.tasks and self.trainer.is_global_zero:
            self.evaluate()
        data = self.write("completed") if self.trainer.is_global_zero else {}
        self.finish_loggers(data, exit_code=0)
        return data

    def evaluate(self) -> None:
        """The selected evaluations on the tested weights, into the record and the loggers."""
        from aelab.evaluation.task import run_tasks
        from aelab.run.load import LoadedRun
        from aelab.tracking import publish_evaluation

        best = self.checkpoint.best_model_path if self.checkpoint is not None else ""
        run = LoadedRun(self.run_dir, self.cfg, self.model.eval(), self.datamodule, Path(best) if best else None)
        self.evaluation = run_tasks(run, self.tasks)
        self.record.add_evaluation(
            self.evaluation.metrics, self.evaluation.details, self.evaluation.files, best or None
        )
        publish_evaluation(self.loggers, self.evaluation.metrics, self.evaluation.images, self.trainer.global_step)

    # ------------------------------------------------------------ the record
    def fields(self, status: str, error: str | None = None, error_type: str | None = None) -> dict:
        """What the run record holds for this run in state ``status``."""
        cfg, history, trainer, model = self.cfg, self.history, self.trainer, self.model
        info = self.info
        best = history.best(info) if history and info else {}
        final = dict(sorted((history.final if history else {}).items()))
        if self.evaluation is not None:
            final.update({k: v for k, v in self.evaluation.metrics.items() if isinstance(v, (int, float))})
        monitor = str(cfg.model.get("monitor", "val/recon_loss"))
        finished = time.time()
        metric = str(cfg.get("optimized_metric") or monitor)
        return {
            "status": status,
            "error": error,
            "error_type": error_type,
            "run_dir": str(self.run_dir),
            **{group: self.choices.get(group) for group in ("model", "data", "noise", "experiment")},
            "bottleneck": cfg.model.get("bottleneck"),
            "params": model.num_parameters() if model is not None else None,
            "seed": cfg.get("seed"),
            "epochs": trainer.current_epoch if trainer is not None else 0,
            "global_step": trainer.global_step if trainer is not None else 0,
            "wall_time_s": round(finished - self.started, 3),
            "started_at": self.started_at,
            "finished_at": now_iso() if status != "running" else None,
            "finished_at_unix": finished if status != "running" else None,
            "final": final,
            "best": best,
            "best_epoch": history.best_epoch(monitor, cfg.model.get("monitor_mode", "min") == "max")
            if history
            else None,
            "objective": {"metric": metric, "value": best.get(metric, final.get(metric))},
            "checkpoints": {
                "best": (self.checkpoint.best_model_path or None) if self.checkpoint is not None else None,
                "last": str(self.run_dir / "checkpoints" / "last.ckpt")
                if (self.run_dir / "checkpoints" / "last.ckpt").is_file()
                else None,
            },
            "dataset": self.datamodule.describe() if self.datamodule is not None else None,
            "dataset_info": self.datamodule.info() if self.datamodule is not None and self.datamodule.splits else None,
            "resumed_from": str(self.resume_from) if self.resume_from is not None else None,
            "wandb": self.tracked.get("wandb"),
            "mlflow": self.tracked.get("mlflow"),
            "world_size": trainer.world_size if trainer is not None else None,
            **(model.summary_extras() if model is not None else {}),
            "overrides": OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)
            if HydraConfig.initialized()
            else [],
            "metric_info": info.to_json() if info is not None else {},
            "timing": self.timings(finished),
        }

    def timings(self, now: float) -> dict:
        """Where the wall time went: start-up to the first batch (the libraries' imports named), training, the end."""
        clock, t = self.clock, dict(self.timing)
        if clock is not None and clock.first_batch_at is not None:
            t["startup_s"] = round(clock.first_batch_at - t["process_start"], 3)
            end = clock.fit_end_at or now
            t["training_s"] = round(end - clock.first_batch_at, 3)
            if clock.fit_end_at is not None:
                t["after_fit_s"] = round(now - clock.fit_end_at, 3)
                t["training_cpu_s"] = round(clock.fit_end_cpu - clock.first_batch_cpu, 3)  # (CPU time: see Timing)
            if clock.train_seconds > 0:
                t["train_images_per_s"] = round(clock.images / clock.train_seconds, 1)
            t["first_batch_at"], t["fit_end_at"] = clock.first_batch_at, clock.fit_end_at
        return t

    def write(self, status: str, error: str | None = None, error_type: str | None = None) -> dict:
        """Update the run record and write ``metrics.json`` (atomically); returns its content."""
        self.record.update(**self.fields(status, error, error_type)).save()
        return self.record.data

    def record_failure(self, exc: BaseException, status: str) -> str:
        """Record ``status`` and the reason in ``metrics.json``, the traceback in ``error.log``; returns the message."""
        err = find_aelab_error(exc)
        message = str(err) if err is not None else (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "error.log").write_text("".join(traceback.format_exception(exc)))
            if self.trainer is None or self.trainer.is_global_zero:
                self.write(status, error=message, error_type=type(err or exc).__name__)
        except Exception as write_exc:  # noqa: BLE001 — never hide the original error
            log.warning("could not record the failure in %s: %s", self.run_dir, write_exc)
        self.finish_loggers({"status": status, "error": message}, exit_code=1)
        return message

    def finish_loggers(self, data: dict, exit_code: int) -> None:
        from aelab.tracking import finish_loggers

        finish_loggers(self.loggers, data, exit_code)


def instantiate_trainer(trainer_cfg: DictConfig, callbacks: list, loggers: list):
    """Lightning's Trainer from ``cfg.trainer`` with the run's callbacks and loggers."""
    from hydra.utils import instantiate

    return instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)


def train(cfg: DictConfig) -> dict:
    """Train, test, evaluate and record the run described by ``cfg``; returns its record."""
    return TrainingJob(cfg).run()


def run_job(cfg: DictConfig, cli: bool = True) -> float | None:
    """The Hydra task: skip a completed run, refuse bad configs, run the job, record any failure; returns the objective.

    ``cli=False`` (the Python API) raises a failed run's error instead of exiting with its message.
    """
    own_wandb_service()
    multirun = is_multirun()
    run_dir = Path(str(cfg.paths.run_dir))
    if not is_extra_rank():  # rank 0 owns the folder; Lightning's other DDP ranks join it
        try:
            lock_folder(run_dir)
        except FolderInUse as exc:  # another live process writes this folder: touch nothing in it
            if multirun:
                log.error("job %s not run: %s", run_dir.name, exc)
                return None
            if cli:
                raise SystemExit(f"aelab-train: error: {exc}") from None
            raise
        for stray in remove_temporaries(run_dir):  # half-written files of a killed process
            log.info("removed %s, left half-written by an earlier process", stray)
    try:
        return _run_owned(cfg, run_dir, multirun, cli)
    finally:
        job_running.clear()
        release_folder(run_dir)


def _run_owned(cfg: DictConfig, run_dir: Path, multirun: bool, cli: bool) -> float | None:
    previous = RunRecord.read(run_dir)
    if (
        previous
        and previous.status == "completed"
        and str(cfg.get("resume", "auto")) != "never"
        and not cfg.get("ckpt_path")
    ):
        log.info(
            "skipping %s: completed earlier (metrics.json says so; delete the folder to train it again)", run_dir.name
        )
        return previous.objective
    job = TrainingJob(cfg)
    try:
        problems, _ = config_problems(cfg)  # a sweep job's swept values
        launcher = str((HydraConfig.get().get("launcher") or {}).get("_target_", "")) if multirun else ""
        problems += [
            p
            for p in [
                local_ddp_sweep_problem(cfg.get("trainer"), launcher) if multirun else None,
                accelerator_problem(cfg.get("trainer")),
            ]
            if p
        ]
        if problems:
            raise ConfigError("; ".join(problems))
        if "joblib" in launcher:  # a worker process: it must not outlive a killed launcher
            stop_with_parent()
        job_running.set()
        value = (job.run().get("objective") or {}).get("value")
        summarize(job, multirun)
        return value
    except (KeyboardInterrupt, SystemExit) as exc:
        ctrl_c = job.ctrl_c is not None and job.ctrl_c.presses > 0
        job.record_failure(KeyboardInterrupt("stopped by Ctrl-C") if ctrl_c else exc, "interrupted")
        summarize(job, multirun)
        print(
            f"aelab-train: interrupted ({'Ctrl-C' if ctrl_c else type(exc).__name__}); what was written is kept in "
            f"{run_dir}; run the same command again to continue from checkpoints/last.ckpt",
            file=sys.stderr,
        )
        if ctrl_c:
            raise SystemExit(128 + 2) from None  # the shell's code for SIGINT (Lightning exits 1 after a Ctrl-C)
        if type(exc).__name__ == "SIGTERMException":
            raise SystemExit(128 + 15) from None  # Lightning's SIGTERM exit carries no status; report the signal
        raise
    except Exception as exc:
        message = job.record_failure(exc, "failed")
        summarize(job, multirun)
        if multirun:
            log.error("job %s failed: %s (traceback in %s)", run_dir.name, message, run_dir / "error.log")
            return None
        if cli and find_aelab_error(exc) is not None:
            raise SystemExit(f"aelab-train: error: {message}\n(run folder: {run_dir})") from None
        raise


def summarize(job: TrainingJob, multirun: bool) -> None:
    """The end-of-run summary of a single run (rank 0): on the terminal and in ``train.log``. Sweeps end with a table
    instead.
    """
    if multirun or (job.trainer is not None and not job.trainer.is_global_zero):
        return
    from aelab.run.summary import print_run_summary

    try:
        print_run_summary(job.run_dir)
    except Exception as exc:  # noqa: BLE001 — a summary must never turn a finished run into a failure
        log.warning("no summary: %s", exc)
